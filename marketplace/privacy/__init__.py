"""Privacy engine: the data map (what personal data we hold, why, and for how long)."""
