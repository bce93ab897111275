"""A throwaway PostgreSQL cluster on a free loopback port, run as a non-root user.

Installed by scripts/setup-postgres.sh (`make test` runs it). initdb and the server refuse to run
as root, so as root they run as the `postgres` OS user, in a temp directory that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from fixtures_servers import free_port
from kappaflow.core.sql import create_engine

USER = "kappaflow"


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run scripts/setup-postgres.sh")
    return os.path.dirname(found[-1])


class PostgresServer:
    """One cluster: start/stop it (tests stop it mid-run), create databases, give URLs."""

    def __init__(self) -> None:
        self._bin = _bindir()
        self._root = tempfile.mkdtemp(prefix="kappaflow-pg-")
        self._data = os.path.join(self._root, "data")
        self._log = os.path.join(self._root, "server.log")
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres", "postgres")
        self._run("initdb", "-D", self._data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = [os.path.join(self._bin, tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed: {proc.stdout[-1000:]}{proc.stderr[-1000:]}")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self._root} -F -c max_connections=200"
        self._run("pg_ctl", "-D", self._data, "-l", self._log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self._data, "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.url()).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def remove(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self._root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_server.create_database()


@pytest.fixture
def own_postgres_server():
    """A server of the test's own, for tests that stop and restart it."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()
