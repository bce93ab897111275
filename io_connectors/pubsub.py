"""Pub/Sub: a streaming source of RawRecords and a sink that publishes messages with attributes.

Source: each message becomes a RawRecord whose payload is the message data (JSON), whose origin
is the message id and whose ingest time is the publish time (the IoT clock-skew rule compares
event time with it). With `timestamp_attribute` the attribute's time overrides the payload's time
field (a replay publisher sets it to the original event time), unless the payload's own time is
unreadable (that record is dead-lettered as in a batch run), and drives the read's watermark; an
`event_id` attribute fills a payload that lacks one. Re-deliveries are caught downstream by our
own dedup transform, on every runner. Two reads, one chosen per run by kappaflow/wiring.py:

- Beam's Python ReadFromPubSub (`ReadPubSubRecords`), which only the Python DirectRunner and
  Dataflow implement (apache/beam#27443). `id_label` asks Dataflow for Pub/Sub's native dedup
  (the DirectRunner raises NotImplementedError for it).
- Beam's Java PubsubIO (`ReadPubSubRecordsThroughJava`), a cross-language read expanded by
  kappaflow's Java expansion service and run by its Java workers (EXTERNAL environment): Prism
  and Flink. Its client is the REST one; `JavaPubSub.root_url` (Java's `pubsubRootUrl`, from
  `PUBSUB_EMULATOR_HOST`) points it at an emulator. Differences from the Python read: the message
  comes without its publish time, so the ingest time is the element timestamp the read gives
  (the publish time) and, with `timestamp_attribute`, unknown (None: IoT then skips its clock-skew
  rule, as for files without an ingest-time field); with `timestamp_attribute` every message
  must carry a readable value of it, as on Dataflow (Java's PubsubIO throws on one that does not:
  on Prism the job fails); the read itself drops a message id it saw in the last 10 minutes
  (Beam's Read.Unbounded applies Deduplicate to sources that ask for it, as PubsubIO's does); and
  its watermark is the minimum over its split readers (80: 20 splits x 4), each of which stays at
  the start of time until it has received a message and moves to the wall clock a minute after
  its last one. A steady stream reaches every reader. After a single burst Prism 2.70 held every
  message at the first stateful step (no pane at all, early or on time) until more messages came;
  embedded Flink closed the windows (docs/runners.md).

Sink: `PublishMessages` publishes dicts as JSON with chosen fields as attributes, in batches,
retries failed messages with backoff and dead-letters what still fails, with Pub/Sub's error.
`PUBSUB_EMULATOR_HOST` (host:port) points both at a local emulator.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from io_connectors.batched_write import WriteInBatchesFn
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord, Rejection, payload_text
from kappaflow.core.retry import RetryPolicy, brief_error
from kappaflow.core.schema import FieldType, Schema, format_timestamp, parse_timestamp

__all__ = [
    "JavaPubSub", "PubSubReadConfig", "ReadPubSubRecords", "ReadPubSubRecordsThroughJava", "MessageToRecordFn",
    "TimestampedMessageToRecordFn", "PublishMessages", "PublishMessagesFn",
    "check_subscription", "check_topic", "json_message", "timestamp_fields",
]

_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")

PUBLISHED = "messages_published"
PUBLISH_FAILED = "messages_publish_failed"


@dataclasses.dataclass(frozen=True)
class JavaPubSub:
    """How to reach Beam's Java PubsubIO: its workers' Pub/Sub root URL, and the expansion service."""

    # Java's PubsubOptions.pubsubRootUrl, e.g. http://localhost:8085 for an emulator; None: Google's
    # service, with the workers' application-default credentials.
    root_url: Optional[str] = None
    # A Java worker pool already running (e.g. next to each TaskManager of a remote Flink cluster);
    # it must have been started with these java_options itself.
    java_worker_pool: Optional[str] = None
    # (worker pool, Java options) -> address of Beam's Java expansion service; the runtime supplies
    # the one it runs (kappaflow/java_services.py), so the connector never starts processes itself.
    expansion_service: Optional[Callable[[Optional[str], Mapping[str, str]], str]] = None

    def java_options(self) -> dict[str, str]:
        """Java pipeline options for the workers: the emulator's root URL, and no Google credentials
        looked for (the search would probe the GCE metadata server)."""
        if not self.root_url:
            return {}
        return {"pubsubRootUrl": self.root_url,
                "credentialFactoryClass": "org.apache.beam.sdk.extensions.gcp.auth.NoopCredentialFactory"}


@dataclasses.dataclass(frozen=True)
class PubSubReadConfig:
    subscription: str
    time_field: str  # payload field that holds event time (overridden by timestamp_attribute)
    id_field: Optional[str] = None  # payload field filled from the attribute of the same name
    timestamp_attribute: Optional[str] = None
    id_label: Optional[str] = None
    # Set (by kappaflow/wiring.py) for runners without Beam's Python read: Beam's Java PubsubIO.
    java: Optional[JavaPubSub] = None

    def __post_init__(self) -> None:
        if not _SUBSCRIPTION.match(self.subscription):
            raise ValueError(f"{self.subscription!r}: expected projects/PROJECT/subscriptions/NAME")


class MessageToRecordFn(beam.DoFn):
    """PubsubMessage → RawRecord(payload, origin=message id, ingest_time=publish time)."""

    def __init__(self, config: PubSubReadConfig) -> None:
        self._config = config

    def process(self, message: Any) -> Iterator[RawRecord]:
        yield self._record(message, message.publish_time.timestamp() if message.publish_time else None)

    def _record(self, message: Any, publish_time: Optional[float]) -> RawRecord:
        attributes = dict(message.attributes or {})
        payload: Any = message.data
        overrides = {}
        if self._config.timestamp_attribute and self._config.timestamp_attribute in attributes:
            overrides[self._config.time_field] = attributes[self._config.timestamp_attribute]
        id_field = self._config.id_field
        if overrides or (id_field and id_field in attributes):
            try:
                decoded = json.loads(payload)
            except ValueError:
                decoded = None  # left as it came: the parser dead-letters it with the reason
            if isinstance(decoded, dict):
                if id_field and id_field in attributes and not decoded.get(id_field):
                    decoded[id_field] = attributes[id_field]
                # A payload whose own time is unreadable stays as it came, for the parser to
                # dead-letter: the attribute may be a publisher's stand-in (kappaflow.publish_replay
                # stamps every message, because Beam's Java read fails on one without it).
                decoded.update({k: v for k, v in overrides.items() if _readable_or_absent(decoded.get(k))})
                payload = decoded
        return RawRecord(payload, f"pubsub:{self._config.subscription}#{message.message_id}", publish_time)


def _readable_or_absent(value: Any) -> bool:
    if value is None:
        return True
    try:
        parse_timestamp(value)
    except (ValueError, TypeError):
        return False
    return True


class TimestampedMessageToRecordFn(MessageToRecordFn):
    """A message from Beam's Java read (which drops the publish time) → RawRecord, as MessageToRecordFn:
    the ingest time is the element's timestamp, the publish time unless `timestamp_attribute` set it."""

    def process(self, message: Any, timestamp=beam.DoFn.TimestampParam) -> Iterator[RawRecord]:
        yield self._record(message, None if self._config.timestamp_attribute else float(timestamp))


class ReadPubSubRecords(beam.PTransform):
    """A Pub/Sub subscription → unbounded PCollection of RawRecords."""

    def __init__(self, config: PubSubReadConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        from apache_beam.io.gcp.pubsub import ReadFromPubSub

        return (
            pbegin
            | "ReadMessages" >> ReadFromPubSub(
                subscription=self._config.subscription, with_attributes=True,
                timestamp_attribute=self._config.timestamp_attribute, id_label=self._config.id_label)
            | "ToRawRecords" >> beam.ParDo(MessageToRecordFn(self._config))
        )


class ReadPubSubRecordsThroughJava(beam.PTransform):
    """A Pub/Sub subscription → unbounded PCollection of RawRecords, read by Beam's Java PubsubIO."""

    def __init__(self, config: PubSubReadConfig) -> None:
        super().__init__()
        if config.java is None or config.java.expansion_service is None:
            raise ValueError(f"reading {config.subscription} through Java needs Beam's Java expansion service")
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        from apache_beam.io.external.gcp.pubsub import ReadFromPubSub

        config, java = self._config, self._config.java
        return (
            pbegin
            | "ReadMessages" >> ReadFromPubSub(
                subscription=config.subscription, with_attributes=True,
                timestamp_attribute=config.timestamp_attribute, id_label=config.id_label,
                expansion_service=java.expansion_service(java.java_worker_pool, java.java_options()))
            | "ToRawRecords" >> beam.ParDo(TimestampedMessageToRecordFn(config))
        )


def timestamp_fields(schema: Optional[Schema]) -> tuple[str, ...]:
    """The top-level TIMESTAMP fields of `schema`: published as RFC 3339 text, not epoch floats."""
    return tuple(f.name for f in schema.fields if f.type is FieldType.TIMESTAMP) if schema else ()


def json_message(element: dict, timestamps: Sequence[str] = ()) -> bytes:
    """A dict as the JSON body of a message (Pub/Sub data, Kafka value), `timestamps` as RFC 3339."""
    body = {k: format_timestamp(v) if k in timestamps and v is not None else v for k, v in element.items()}
    return json.dumps(body, sort_keys=True, default=str).encode("utf-8")


class PublishMessagesFn(WriteInBatchesFn):
    """Buffers dicts, publishes them as a batch, retries the failed ones, dead-letters the rest."""

    def __init__(
        self, topic: str, attributes: Sequence[str], batch_size: int,
        retry: RetryPolicy, timeout_seconds: float, schema: Optional[Schema] = None,
    ) -> None:
        super().__init__(batch_size)
        self._topic = topic
        self._timestamps = timestamp_fields(schema)
        self._attributes = tuple(attributes)
        self._retry = retry
        self._timeout = timeout_seconds
        self._published = Metrics.counter(metrics.NAMESPACE, PUBLISHED)
        self._failed = Metrics.counter(metrics.NAMESPACE, PUBLISH_FAILED)

    def setup(self) -> None:
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=self._batch_size, max_latency=0.05))

    def teardown(self) -> None:
        self._client.stop()

    def _message(self, element: dict) -> tuple[bytes, dict[str, str]]:
        data = json_message(element, self._timestamps)
        return data, {a: str(element[a]) for a in self._attributes if element.get(a) is not None}

    def write_batch(self, batch: list[dict]) -> Iterator[Any]:
        pending, errors = list(batch), {}
        try:
            self._retry.call(f"publishing to {self._topic}", lambda: self._publish(pending, errors),
                             retry_on=_Unpublished)
        except _Unpublished:
            pass  # what is still pending after the last attempt: dead letters
        for element in pending:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection(
                "publish", f"{self._topic}: {errors[id(element)]}", payload_text(element),
                event_id=next((str(element[a]) for a in self._attributes if element.get(a) is not None), None),
            ))

    def _publish(self, pending: list[dict], errors: dict[int, str]) -> None:
        """Publish `pending`; keep there (with their errors) only the messages that failed."""
        futures = []
        for element in pending:
            data, attributes = self._message(element)
            # The policy retries: the client's own retry would hide a lost server for minutes.
            futures.append(self._client.publish(self._topic, data, retry=None, timeout=self._timeout, **attributes))
        failed = []
        for element, future in zip(pending, futures):
            try:
                future.result(timeout=self._timeout + 5)
                self._published.inc()
            except Exception as err:  # noqa: BLE001 - any publish error: retry, then dead-letter
                errors[id(element)] = f"{type(err).__name__}: {brief_error(err)}"
                failed.append(element)
        pending[:] = failed
        if failed:
            raise _Unpublished(f"{len(failed)} of {len(futures)} messages not published")


class _Unpublished(Exception):
    """Some messages of a batch failed; they are left pending for the next attempt."""


class PublishMessages(beam.PTransform):
    """Dicts → JSON messages on `topic` with `attributes` (field names) as message attributes;
    returns the dead letters of messages that could not be published.

    Name the element's id first in `attributes` (e.g. `alert_id`): consumers dedup on it, and it
    becomes the dead letter's `event_id`. With `schema`, its TIMESTAMP fields are sent as RFC 3339.
    """

    def __init__(
        self, topic: str, attributes: Sequence[str] = (), batch_size: int = 100,
        retry: RetryPolicy = RetryPolicy(), timeout_seconds: float = 30.0, schema: Optional[Schema] = None,
    ) -> None:
        super().__init__()
        if not _TOPIC.match(topic):
            raise ValueError(f"{topic!r}: expected projects/PROJECT/topics/NAME")
        if batch_size < 1 or timeout_seconds <= 0:
            raise ValueError("batch_size must be >= 1 and timeout_seconds > 0")
        self._fn = PublishMessagesFn(topic, attributes, batch_size, retry, timeout_seconds, schema)

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        outputs = elements | "Publish" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="published")
        return outputs[DEAD_LETTER_TAG]


def _check(kind: str, name: str, get) -> None:
    from google.api_core import exceptions

    try:
        get(name, timeout=10)
    except exceptions.NotFound:
        raise ConnectionError(f"Pub/Sub {kind} {name} does not exist") from None
    except exceptions.GoogleAPICallError as err:
        endpoint = _endpoint()
        raise ConnectionError(f"Pub/Sub at {endpoint} is not reachable ({kind} {name}): "
                              f"{brief_error(err, limit=200)}") from None


def _endpoint() -> str:
    import os

    return os.environ.get("PUBSUB_EMULATOR_HOST") or "the Pub/Sub service"


def check_subscription(subscription: str) -> None:
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        _check("subscription", subscription, lambda n, timeout: client.get_subscription(
            subscription=n, timeout=timeout, retry=None))
    finally:
        client.close()


def check_topic(topic: str) -> None:
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    try:
        _check("topic", topic, lambda n, timeout: client.get_topic(topic=n, timeout=timeout, retry=None))
    finally:
        client.stop()
