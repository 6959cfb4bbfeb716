"""Domain area: accounts."""
