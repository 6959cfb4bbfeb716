"""Domain area: system."""
