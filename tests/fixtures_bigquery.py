"""bqemulator, a DuckDB-backed BigQuery REST server, on free loopback ports, started offline.

Installed in its own virtualenv by scripts/setup-bqemulator.sh; scripts/bqemulator_offline.py
skips the DuckDB spatial extension that its start-up would download (GEOGRAPHY is unsupported).
"""

from __future__ import annotations

import os

import pytest

from fixtures_servers import ServerProcess, free_port
from kappaflow.runner_cache import cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "kappaflow-test"


class BigQueryEmulator:
    def __init__(self) -> None:
        python = os.path.join(cache_dir(), "bqemulator", "bin", "python")
        if not os.path.exists(python):
            raise RuntimeError("bqemulator is not installed: run scripts/setup-bqemulator.sh")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._server = ServerProcess(
            [python, os.path.join(ROOT, "scripts", "bqemulator_offline.py"), "start",
             f"--rest-port={self.port}", f"--grpc-port={free_port()}", f"--project={PROJECT}",
             "--log-level=warning"],
            self.port, 90, "bqemulator")

    def client(self):
        from io_connectors.bigquery import bigquery_client

        return bigquery_client(PROJECT, self.host)

    def dataset(self, name: str) -> str:
        """Creates the dataset; returns the `bigquery:PROJECT.DATASET` URL."""
        client = self.client()
        client.create_dataset(f"{PROJECT}.{name}", exists_ok=True)
        client.close()
        return f"bigquery:{PROJECT}.{name}"

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def bigquery_emulator():
    emulator = BigQueryEmulator()
    yield emulator
    emulator.stop()
