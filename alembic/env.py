"""Alembic environment: migrates the database named by RIX_DATABASE_URL (or the caller's URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from app.config import get_settings
from app.storage.db import make_engine
from app.storage.tables import metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations on a live connection (offline SQL generation is not used)."""
    url = config.attributes.get("database_url") or get_settings().database_url
    engine = make_engine(url)
    # rix_write: SQLite takes the write lock up front (BEGIN IMMEDIATE), so a second process
    # migrating at the same time waits for it instead of failing with "database is locked".
    with engine.connect().execution_options(rix_write=True) as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Several `rix serve` processes may start at once on one database: the first
                # migrates, the others wait here and then find the schema at head.
                connection.execute(text("SELECT pg_advisory_xact_lock(727170)"))
            context.run_migrations()
    engine.dispose()


run_migrations_online()
