"""Alembic environment for the sink's database: plain SQL migrations, no ORM models.

Run by :func:`city_platform.db.migrate`; the URL comes from the Alembic config it builds.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

url = context.config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
