"""Storage: SQLAlchemy Core tables, the store and Alembic migrations (SQLite and PostgreSQL)."""
