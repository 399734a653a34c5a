"""Alembic environment for the journal.

Run through :func:`billgw.gateway.migrate.upgrade` (``billgw db upgrade``),
which passes either an open connection or the URL in the config.
"""
from alembic import context
from sqlalchemy import create_engine

from billgw.gateway.schema import ALL_METADATA

config = context.config
target_metadata = list(ALL_METADATA)


def run_migrations_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
