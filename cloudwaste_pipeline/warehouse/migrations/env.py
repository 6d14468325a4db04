"""Alembic environment: migrations run on the connection the caller passes (engine.upgrade)."""

from alembic import context

from cloudwaste_pipeline.warehouse.engine import VERSION_TABLE
from cloudwaste_pipeline.warehouse.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_schemas=True,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
