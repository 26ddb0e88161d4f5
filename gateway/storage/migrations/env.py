"""Alembic environment: runs on the connection the gateway hands over."""

from alembic import context

from gateway.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `gateway db upgrade` (it supplies the connection)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
