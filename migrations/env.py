"""Alembic environment: runs migrations on the connection or URL the caller provides."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

# Importing the table modules registers their tables on the registry metadata.
import registry.authz.tables
import registry.log.storage  # noqa: F401
import services.storage.agents_schema
import services.storage.audit_schema
import services.storage.compliance_schema
import services.storage.disputes_schema
import services.storage.enforcement_schema
import services.storage.industry_schema
import services.storage.legacy_schema
import services.storage.proofing_schema  # noqa: F401
from registry.schema import metadata as registry_metadata
from services.storage.schema import metadata as service_metadata

config = context.config
# Both halves share one database; autogenerate compares against all their tables.
target_metadata = [service_metadata, registry_metadata]


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
