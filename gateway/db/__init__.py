"""Storage: one schema for SQLite and PostgreSQL (SQLAlchemy 2 Core, async), Alembic migrations."""
