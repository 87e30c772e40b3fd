"""Alembic environment: runs migrations on the engine handed over by xwvm."""

from alembic import context

from xwvm.server.db.models import Base

config = context.config
engine = config.attributes["engine"]


def _sqlite_foreign_keys(connection, on: bool) -> None:  # noqa: ANN001
    """SQLite changes a table by copying it (batch mode), and dropping a table that others
    reference fails, or cascades, while foreign keys are enforced: they are off for the
    migration. The pragma only takes effect outside a transaction, hence the driver's own
    connection (in autocommit mode, see db/engine.py)."""
    raw = connection.connection.driver_connection
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    if on:
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left {len(broken)} broken foreign key(s): {broken[:5]}")


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys(connection, False)
    try:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if sqlite:
            _sqlite_foreign_keys(connection, True)
