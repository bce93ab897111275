"""bqemulator, a DuckDB-backed BigQuery REST server, on free loopback ports, started offline.

Installed in its own virtualenv by scripts/setup-bqemulator.sh; scripts/bqemulator_offline.py
skips the DuckDB spatial extension that its start-up would download (GEOGRAPHY is unsupported).

The emulator also serves the Storage Write (and Read) gRPC API, in plaintext on a port of its own.
Beam's Java BigQueryIO has ONE endpoint option (`bigQueryEndpoint`) for both: the REST root URL
(`http://host:port`) and, scheme cut off, the gRPC address, always dialled with TLS. `BigQueryFront`
is that one port: a loopback proxy that sends plain HTTP to the REST port and TLS with ALPN `h2`
to the gRPC port (TLS ended here, with a throw-away certificate for localhost that the Java
workers trust through `java_tool_options()`; keytool, from the Java runtime, makes their truststore).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import subprocess
import threading

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
        self.grpc_port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._server = ServerProcess(
            [python, os.path.join(ROOT, "scripts", "bqemulator_offline.py"), "start",
             f"--rest-port={self.port}", f"--grpc-port={self.grpc_port}", f"--project={PROJECT}",
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


class BigQueryFront:
    """One loopback port for Beam's Java BigQuery client: plain HTTP → the emulator's REST port, TLS
    (ALPN h2) → its gRPC port. A thread per connection pumps bytes both ways."""

    def __init__(self, emulator: BigQueryEmulator, workdir: str) -> None:
        self._rest, self._grpc = emulator.port, emulator.grpc_port
        self.truststore, self._password = os.path.join(workdir, "front-trust.p12"), "kappaflow"
        key, cert = _localhost_certificate(workdir)
        if os.path.exists(self.truststore):
            os.unlink(self.truststore)
        subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "bqfront", "-file", cert, "-keystore",
                        self.truststore, "-storetype", "PKCS12", "-storepass", self._password],
                       check=True, capture_output=True)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._tls.set_alpn_protocols(["h2", "http/1.1"])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def java_tool_options(self) -> str:
        """JVM flags that make the Java workers trust the front's certificate."""
        return f"-Djavax.net.ssl.trustStore={self.truststore} -Djavax.net.ssl.trustStorePassword={self._password}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if client.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS handshake record
                client = self._tls.wrap_socket(client, server_side=True)
                port = self._grpc if client.selected_alpn_protocol() == "h2" else self._rest
            else:
                port = self._rest
            with socket.create_connection(("127.0.0.1", port)) as backend:
                _pump(client, backend)
        except (OSError, ssl.SSLError):
            pass  # a client that hung up or failed the handshake
        finally:
            client.close()

    def stop(self) -> None:
        self._listener.close()


def _localhost_certificate(workdir: str) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1, valid two days: (key file, cert file)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key, cert = os.path.join(workdir, "front-key.pem"), os.path.join(workdir, "front-cert.pem")
    with open(key, "wb") as handle:
        handle.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with open(cert, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _pump(client: socket.socket, backend: socket.socket) -> None:
    """Copy bytes both ways until either side closes. One thread: an SSL socket must not be used
    from two at once; bytes it has decrypted but not handed out (`pending`) count as readable."""
    client.setblocking(False)
    while True:
        pending = isinstance(client, ssl.SSLSocket) and client.pending()
        readable = [client] if pending else select.select([client, backend], [], [], 60)[0]
        if client in readable:
            try:
                data = client.recv(1 << 16)
            except (ssl.SSLWantReadError, BlockingIOError):
                data = None
            if data == b"":
                return
            if data:
                backend.sendall(data)
        if backend in readable:
            data = backend.recv(1 << 16)
            if not data:
                return
            client.setblocking(True)
            client.sendall(data)
            client.setblocking(False)


@pytest.fixture(scope="session")
def bigquery_front(bigquery_emulator, tmp_path_factory):
    front = BigQueryFront(bigquery_emulator, str(tmp_path_factory.mktemp("bigquery-front")))
    yield front
    front.stop()


@pytest.fixture(scope="session")
def bigquery_emulator():
    emulator = BigQueryEmulator()
    yield emulator
    emulator.stop()
