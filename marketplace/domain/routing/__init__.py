"""Domain area: routing."""
