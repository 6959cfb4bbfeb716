"""Persistence: ORM models, engine and session set-up, and Alembic migrations (the only schema path)."""
