"""Alembic's entry point: runs the migrations on the connection handed over
in ``config.attributes`` (nfvha.controller.migrations.upgrade)."""
from alembic import context

connection = context.config.attributes["connection"]
# batch mode: SQLite cannot ALTER most things in place
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
