"""Helpers shared by the real-server fixtures: free loopback ports, starting a server process
with its output in a log file, waiting for it to listen, and stopping it."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from typing import Optional

from kappaflow.processes import stop_process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class ServerProcess:
    """A server started with `argv`, its output in a temporary log, listening on `port` within `timeout`."""

    def __init__(self, argv: list[str], port: int, timeout: float, what: str,
                 env: Optional[dict[str, str]] = None) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix=f"kappaflow-{what.split()[-1]}-", suffix=".log", delete=False)
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env)
        wait_for_port(port, timeout, what)

    def stop(self) -> None:
        stop_process(self._proc, timeout=10)
        self._log.close()
        os.unlink(self._log.name)
