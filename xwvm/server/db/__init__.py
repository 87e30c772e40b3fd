"""Database: models, engine/session setup and Alembic migrations."""
