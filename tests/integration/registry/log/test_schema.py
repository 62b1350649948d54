"""Migration 0002 creates exactly the log tables the library declares, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from registry.log import storage
from services.storage.database import Database


def _concerns_log(diff: object) -> bool:
    # compare_metadata yields tuples (op, object, ...) or lists of them for column changes.
    items = diff if isinstance(diff, list) else [diff]
    return any("log_" in repr(item) for item in items)


def test_migrated_database_matches_the_log_tables(db: Database) -> None:
    tables = MetaData()
    for table in (
        storage.log_pending,
        storage.log_entries,
        storage.log_tiles,
        storage.log_state,
        storage.log_checkpoints,
        storage.log_cosignatures,
    ):
        table.to_metadata(tables)
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), tables)
    assert [diff for diff in diffs if _concerns_log(diff)] == []
