"""Alembic environment: migrates `storage.tables.base.Base.metadata` (every table: storage.tables imports them all) on SQLite and PostgreSQL alike."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from storage.tables.base import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run the migrations over a connection of our own."""
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        # render_as_batch lets ALTER TABLE work on SQLite too.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
