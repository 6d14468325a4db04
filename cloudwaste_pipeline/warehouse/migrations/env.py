"""Alembic environment: migrations run on the connection ``engine.upgrade`` passes in.

There is no online/offline split and no URL here: the caller owns the engine, the transaction and
(on PostgreSQL) the advisory lock, so this file only says *what* to compare and where versions
are recorded.
"""

from alembic import context

from cloudwaste_pipeline.warehouse.engine import VERSION_TABLE, include_name
from cloudwaste_pipeline.warehouse.schema import RAW_SCHEMA, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "cloudwaste migrations run through cloudwaste_pipeline.warehouse.engine.upgrade(), "
        "which passes the connection; the alembic command line is not wired up"
    )
if connection.dialect.name == "sqlite":
    attached = {row[1] for row in connection.exec_driver_sql("PRAGMA database_list")}
    if RAW_SCHEMA not in attached:
        raise RuntimeError(
            f"the SQLite raw store is not attached as {RAW_SCHEMA!r}; "
            "build the engine with cloudwaste_pipeline.warehouse.engine.make_engine()"
        )

target_metadata = metadata
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    version_table=VERSION_TABLE,
    include_schemas=True,
    include_name=include_name,
    # SQLite cannot ALTER most things: later migrations rebuild tables in batch mode.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
