"""How kappaflow connects to an SQL database (any SQLAlchemy URL): the reference lookups, the sinks
and the launcher's checks all connect the same way."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["create_engine", "safe_url"]


def create_engine(url: str) -> sa.engine.Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]  # the driver we ship
    if url.startswith("sqlite"):
        # Several bundles may write at once; wait for the lock instead of failing.
        return sa.create_engine(url, connect_args={"timeout": 60})
    if url.startswith("postgresql+psycopg2://"):
        # A server that is down or unreachable fails the attempt in seconds; retries take over.
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    return sa.create_engine(url, pool_pre_ping=True)


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
