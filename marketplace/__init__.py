"""Relay marketplace: the Litestar app, its database and its business rules."""
