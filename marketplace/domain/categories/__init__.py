"""Domain area: categories."""
