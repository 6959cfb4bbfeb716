"""Domain area: tasks."""
