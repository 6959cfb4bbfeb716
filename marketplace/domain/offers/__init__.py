"""Domain area: offers."""
