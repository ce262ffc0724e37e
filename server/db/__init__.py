"""Persistence: SQLAlchemy schema, engine and transactions, Alembic migrations."""
