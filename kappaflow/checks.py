"""Checks of a run's configuration before anything runs: the input is there, and the reference
database has the tables and columns the pipeline looks up. Each failure is a ConfigurationError
whose one-line message names the option and the fix."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import sqlalchemy as sa

from io_connectors.files import expand_pattern
from kappaflow.core.retry import brief_error
from kappaflow.core.sql import create_engine, safe_url
from kappaflow.errors import ConfigurationError
from transforms.enrich_database import LookupSpec

__all__ = ["check_input", "check_reference_db"]


def check_input(pattern: Optional[str]) -> None:
    """Local files must exist now; remote globs (gs://...) are matched by the job, BigQuery by its preflight."""
    if not pattern or pattern.startswith("bigquery:"):
        return
    local = [p.strip() for p in pattern.split(",") if p.strip() and "://" not in p]
    if not local:
        return
    try:
        expand_pattern(",".join(local))
    except FileNotFoundError as err:
        raise ConfigurationError(f"--input: {err}; check the path (and quote a glob so the shell leaves it "
                                 "to kappaflow)") from None
    except ValueError as err:
        raise ConfigurationError(f"--input: {err}") from None


def _sqlite_path(url: str) -> Optional[str]:
    parsed = sa.engine.make_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "",
                                                                                                ":memory:") else None


def check_reference_db(url: str, lookups: Sequence[LookupSpec]) -> None:
    """The database answers and has every looked-up table with its key and copied columns."""
    try:
        path = _sqlite_path(url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(f"--reference_db: {url!r} is not a database URL; give one like "
                                 "sqlite:///reference.db or postgresql://user@host/db") from None
    if path is not None and not os.path.exists(path):
        # SQLite would create an empty file and every lookup would fail at run time.
        raise ConfigurationError(f"--reference_db: {path} does not exist; point it at your reference "
                                 f"database (tables {', '.join(sorted({l.table for l in lookups}))})")
    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        present = set(inspector.get_table_names())
        for table in sorted({l.table for l in lookups}):
            needed = {c for l in lookups if l.table == table for c in (l.key_column, *l.columns)}
            if table not in present:
                raise ConfigurationError(
                    f"--reference_db: {safe_url(url)} has no {table} table (needed columns: "
                    f"{', '.join(sorted(needed))}); load it, or point --reference_db at the database that has it")
            columns = {c["name"] for c in inspector.get_columns(table)}
            missing = needed - columns
            if missing:
                raise ConfigurationError(
                    f"--reference_db: table {table} in {safe_url(url)} lacks column(s) "
                    f"{', '.join(sorted(missing))}; add them (the pipeline looks them up)")
    except sa.exc.SQLAlchemyError as err:
        reason = brief_error(getattr(err, "orig", None) or err, limit=200)
        raise ConfigurationError(f"--reference_db: {safe_url(url)} is not reachable ({reason}); start the "
                                 "server or fix the URL") from None
    finally:
        engine.dispose()
