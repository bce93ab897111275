"""A single-node KRaft Kafka broker on free loopback ports (scripts/setup-kafka.sh, scripts/kafka.sh run)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Iterable, Optional

import pytest

from fixtures_servers import ServerProcess, free_port

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class KafkaBroker:
    def __init__(self, partitions: int = 2) -> None:
        from kappaflow.runner_cache import cache_dir

        if not os.path.isdir(os.path.join(cache_dir(), "kafka")):
            raise RuntimeError("no Kafka broker: run scripts/setup-kafka.sh (make servers)")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.partitions = partitions
        self._dir = tempfile.mkdtemp(prefix="kappaflow-kafka-")
        env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(free_port()),
               "KAFKA_DIR": self._dir, "KAFKA_PARTITIONS": str(partitions)}
        # Formatting the storage and starting the JVMs takes ~5-15 s on a shared machine.
        self._server = ServerProcess(["bash", os.path.join(_REPO, "scripts", "kafka.sh"), "run"],
                                     self.port, 90, "the Kafka broker", env=env)

    def topic(self, partitions: Optional[int] = None) -> str:
        """A new, empty topic (created explicitly, so every partition exists before a reader starts)."""
        from kafka.admin import KafkaAdminClient, NewTopic

        name = f"t-{uuid.uuid4().hex[:12]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions or self.partitions, 1)])
        finally:
            admin.close()
        return name

    def produce(self, topic: str, records: Iterable[tuple[Optional[bytes], Optional[bytes], Optional[int]]]) -> int:
        """Sends (key, value, timestamp ms) records and waits for every acknowledgement; a None value
        is a tombstone. Records with the same key land in the same partition, in order."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        try:
            futures = [producer.send(topic, key=key, value=value, timestamp_ms=ts) for key, value, ts in records]
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()
        return len(futures)

    def stop(self) -> None:
        self._server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker():
    broker = KafkaBroker()
    yield broker
    broker.stop()
