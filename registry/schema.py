"""The registry's SQLAlchemy metadata: its tables live in the same database as the service's."""

from __future__ import annotations

from sqlalchemy import MetaData

# One naming convention for every table of both halves, so constraint names are predictable on
# every engine and Alembic migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names for both halves' tables (the service's schema uses it too)."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)
