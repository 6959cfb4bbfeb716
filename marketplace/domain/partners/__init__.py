"""Domain area: partners."""
