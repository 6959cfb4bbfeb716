"""Domain area: providers."""
