"""The Pub/Sub emulator of the Google Cloud SDK on a free loopback port (scripts/setup-pubsub-emulator.sh)."""

from __future__ import annotations

import glob
import os
import uuid

import pytest

from fixtures_servers import ServerProcess, free_port

PROJECT = "kappaflow-test"


class PubSubEmulator:
    def __init__(self) -> None:
        jars = sorted(glob.glob("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"))
        if not jars:
            raise RuntimeError("no Pub/Sub emulator: run scripts/setup-pubsub-emulator.sh")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._server = ServerProcess(["java", "-jar", jars[-1], "--host=127.0.0.1", f"--port={self.port}"],
                                     self.port, 60, "the Pub/Sub emulator")

    def topic(self) -> str:
        """A new topic with one subscription; returns the topic path (subscription: `subscription_of`)."""
        from google.cloud import pubsub_v1

        name = uuid.uuid4().hex[:12]
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, f"t-{name}")
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=self.subscription_of(topic), topic=topic, ack_deadline_seconds=60)
        subscriber.close()
        return topic

    @staticmethod
    def subscription_of(topic: str) -> str:
        return topic.replace("/topics/t-", "/subscriptions/s-")

    def publish(self, topic: str, messages: list[tuple[bytes, dict]]) -> list[str]:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        futures = [publisher.publish(topic, data, **attributes) for data, attributes in messages]
        ids = [f.result(timeout=30) for f in futures]
        publisher.stop()
        return ids

    def pull(self, subscription: str, expected: int, timeout: float = 30.0) -> list:
        """Pull (and ack) until `expected` messages arrived or `timeout` passed."""
        import time

        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        messages = []
        deadline = time.monotonic() + timeout
        try:
            while len(messages) < expected and time.monotonic() < deadline:
                response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
                if response.received_messages:
                    subscriber.acknowledge(subscription=subscription,
                                           ack_ids=[m.ack_id for m in response.received_messages])
                    messages.extend(m.message for m in response.received_messages)
        finally:
            subscriber.close()
        return messages

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def pubsub_emulator():
    emulator = PubSubEmulator()
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host  # read by every Pub/Sub client we create
    yield emulator
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
    emulator.stop()
