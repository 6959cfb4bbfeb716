"""Domain area: staff."""
