"""Pub/Sub source, publisher and replay command against the Pub/Sub emulator."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
import pytest
import sqlalchemy as sa
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from fixtures_servers import free_port
from io_connectors.pubsub import MessageToRecordFn, PubSubReadConfig, PublishMessages
from kappaflow.core.records import RawRecord, dead_letter_row
from kappaflow.core.retry import RetryPolicy
from kappaflow.core.schema import format_timestamp, parse_timestamp
from kappaflow.publish_replay import ReplayPace, publish_replay
from kappaflow.samples.clickstream import SampleConfig, build_reference_db
from transforms.event_time import EventTimeOf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSCRIPTION = "projects/p1/subscriptions/s1"


def message(data: bytes, attributes=None, message_id="42", publish_time=1_800_000_000.5):
    return PubsubMessage(data, attributes or {}, message_id,
                         dt.datetime.fromtimestamp(publish_time, dt.timezone.utc))


def to_record(msg, **config) -> RawRecord:
    fn = MessageToRecordFn(PubSubReadConfig(SUBSCRIPTION, "timestamp", "event_id", **config))
    (record,) = fn.process(msg)
    return record


def test_message_becomes_a_record_with_publish_time_as_ingest_time():
    record = to_record(message(b'{"event_id": "e1", "timestamp": 5}'))
    assert record == RawRecord(b'{"event_id": "e1", "timestamp": 5}', f"pubsub:{SUBSCRIPTION}#42", 1_800_000_000.5)
    # The event_id attribute fills a payload without one, but never overrides the payload's.
    assert to_record(message(b'{"timestamp": 5}', {"event_id": "a1"})).payload == {"timestamp": 5, "event_id": "a1"}
    assert to_record(message(b'{"event_id": "e1"}', {"event_id": "a1"})).payload == {"event_id": "e1"}
    # With --timestamp_attribute the attribute is the event time.
    record = to_record(message(b'{"event_id": "e1", "timestamp": 5}', {"ts": "2027-01-01T00:00:00Z"}),
                       timestamp_attribute="ts")
    assert record.payload["timestamp"] == "2027-01-01T00:00:00Z"
    # A payload whose own time is unreadable keeps it (the attribute may be a publisher's stand-in):
    # the parser dead-letters it, as a batch run does.
    record = to_record(message(b'{"event_id": "e1", "timestamp": "yesterday"}', {"ts": "2027-01-01T00:00:00Z"}),
                       timestamp_attribute="ts")
    assert record.payload["timestamp"] == "yesterday"
    # A payload that is not JSON is passed on untouched for the parser to dead-letter.
    assert to_record(message(b"not json", {"event_id": "a1"})).payload == b"not json"


def test_a_message_from_the_java_read_takes_its_ingest_time_from_the_element_timestamp(run_batch):
    """Beam's Java read (Prism, Flink) drops the publish time; the element timestamp is the publish
    time, unless --timestamp_attribute made it the event time: then the ingest time is unknown."""
    from apache_beam.transforms.window import TimestampedValue

    from io_connectors.pubsub import TimestampedMessageToRecordFn

    msg = PubsubMessage(b'{"event_id": "e1", "timestamp": 5}', {"ts": "1970-01-01T00:00:07Z"}, "42")

    def build(p):
        messages = p | beam.Create([TimestampedValue(msg, 1_800_000_000.5)])
        by_publish = messages | "Publish" >> beam.ParDo(TimestampedMessageToRecordFn(
            PubSubReadConfig(SUBSCRIPTION, "timestamp", "event_id")))
        by_attribute = messages | "Attribute" >> beam.ParDo(TimestampedMessageToRecordFn(
            PubSubReadConfig(SUBSCRIPTION, "timestamp", "event_id", timestamp_attribute="ts")))
        assert_that(by_publish, equal_to([RawRecord(msg.data, f"pubsub:{SUBSCRIPTION}#42", 1_800_000_000.5)]),
                    label="publish")
        assert_that(by_attribute, equal_to([RawRecord({"event_id": "e1", "timestamp": "1970-01-01T00:00:07Z"},
                                                      f"pubsub:{SUBSCRIPTION}#42", None)]), label="attribute")

    run_batch(build)


def test_read_config_and_publisher_validate_names():
    with pytest.raises(ValueError):
        PubSubReadConfig("my-subscription", "timestamp")
    with pytest.raises(ValueError):
        PublishMessages("projects/p/subscriptions/s")


class _Done:
    def result(self, timeout=None):
        return "id"


def test_replay_is_paced_by_event_time():
    now = [0.0]
    published = []
    records = [RawRecord(json.dumps({"event_id": f"e{i}", "timestamp": t}).encode(), f"f:{i}")
               for i, t in enumerate([1000, 1060, 1030, 1120, "bad"])]

    def publish(data, attributes):
        published.append((now[0], json.loads(data)["event_id"], attributes))
        return _Done()

    out = io.StringIO()
    count = publish_replay(records, publish, EventTimeOf("timestamp"), ReplayPace(60), "event_id",
                           progress=out, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert count == 5
    # 60x: one minute of event time per second; an out-of-order record goes at once.
    assert [(t, e) for t, e, _ in published] == [(0.0, "e0"), (1.0, "e1"), (1.0, "e2"), (2.0, "e3"), (2.0, "e4")]
    assert published[1][2] == {"event_time": format_timestamp(1060), "event_id": "e1"}
    # No readable time: the time of the record before it, for Beam's Java read (it fails on a
    # message without the attribute); the pipeline still dead-letters it for its own time.
    assert published[4][2] == {"event_time": format_timestamp(1120), "event_id": "e4"}
    assert "published: 5 messages" in out.getvalue()
    assert ReplayPace.parse("max").due(0, 1e9) == 0.0
    # Unreadable records at the start wait for the first readable time, and go just before it.
    published.clear()
    publish_replay(records[4:] + records[:2], publish, EventTimeOf("timestamp"), ReplayPace(None), "event_id",
                   progress=io.StringIO(), clock=lambda: now[0], sleep=lambda s: None)
    assert [(e, a.get("event_time")) for _, e, a in published] == [
        ("e4", format_timestamp(1000)), ("e0", format_timestamp(1000)), ("e1", format_timestamp(1060))]
    with pytest.raises(ValueError):
        ReplayPace(0)


@pytest.mark.slow
def test_publish_messages_with_attributes(pubsub_emulator, run_batch, count_of):
    topic = pubsub_emulator.topic()
    alerts = [{"alert_id": f"a{i}", "device_id": f"d{i % 3}", "value": i * 1.5} for i in range(25)]

    def build(p):
        dead = p | beam.Create(alerts) | PublishMessages(topic, ("alert_id", "device_id"), batch_size=10)
        assert_that(dead, equal_to([]))

    result = run_batch(build)
    assert count_of(result, "messages_published") == 25
    got = pubsub_emulator.pull(pubsub_emulator.subscription_of(topic), 25)
    by_id = {m.attributes["alert_id"]: (json.loads(m.data), dict(m.attributes)) for m in got}
    assert len(got) == 25 and by_id == {
        a["alert_id"]: (a, {"alert_id": a["alert_id"], "device_id": a["device_id"]}) for a in alerts}


@pytest.mark.slow
def test_publish_failures_are_retried_then_dead_lettered(pubsub_emulator, run_batch, count_of):
    missing = "projects/kappaflow-test/topics/never-created"

    def check(rejections):
        actual = [dead_letter_row(r, "test") for r in rejections]
        if sorted(d["event_id"] for d in actual) != ["a0", "a1", "a2"]:
            raise BeamAssertException(f"dead letters {actual}")
        if not all(d["stage"] == "publish" and "NotFound" in d["reason"] and missing in d["reason"]
                   for d in actual):
            raise BeamAssertException(f"reason does not say why: {actual[0]}")

    def build(p):
        dead = p | beam.Create([{"alert_id": f"a{i}"} for i in range(3)]) | PublishMessages(
            missing, ("alert_id",), retry=RetryPolicy(attempts=3, initial_backoff_seconds=0.05))
        assert_that(dead, check)

    started = time.monotonic()
    result = run_batch(build)
    assert count_of(result, "messages_publish_failed") == 3 and count_of(result, "messages_published") == 0
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_replay_command_publishes_with_event_time_attribute(pubsub_emulator, tmp_path):
    topic = pubsub_emulator.topic()
    events = tmp_path / "events.jsonl"
    times = [1_700_000_000 + 30 * i for i in range(5)]  # two minutes of event time
    events.write_text("".join(json.dumps({"event_id": f"e{i}", "timestamp": t}) + "\n"
                              for i, t in enumerate(times)), encoding="utf-8")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kappaflow.publish_replay", f"--input={events}", f"--topic={topic}",
         "--speedup=60"], cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "published: 5 messages" in proc.stderr
    assert elapsed >= 2.0  # 120 s of event time at 60x
    got = pubsub_emulator.pull(pubsub_emulator.subscription_of(topic), 5)
    assert sorted((m.attributes["event_id"], parse_timestamp(m.attributes["event_time"])) for m in got) == [
        (f"e{i}", float(t)) for i, t in enumerate(times)]


def _clickstream_messages(count: int, now: float) -> list[tuple[bytes, dict]]:
    messages = []
    for i in range(count):
        event = {"event_id": f"e{i}", "user_id": f"u{i % 7:06d}",
                 "event_type": "purchase" if i % 4 == 0 else "page_view",
                 "timestamp": format_timestamp(now - 3 + i * 0.05),
                 "properties": {"product_id": f"p{i % 5:04d}", "price": 2.5},
                 "context": {"ip": "203.0.113.9"}}
        messages.append((json.dumps(event).encode(), {"event_id": event["event_id"]}))
    return messages


@pytest.mark.slow
def test_clickstream_streaming_from_pubsub_drops_redeliveries(pubsub_emulator, tmp_path):
    """Publish events (current timestamps: see "DirectRunner watermark" in docs/sources-and-sinks.md#pubsub), one
    in three of them twice, and bad messages; run the pipeline until every unique event is
    counted, check that no re-delivery is, then cancel it."""
    topic = pubsub_emulator.topic()
    reference, output = f"sqlite:///{tmp_path}/reference.db", f"sqlite:///{tmp_path}/out.db"
    build_reference_db(reference, SampleConfig(users=10, products=5))
    events = _clickstream_messages(45, time.time())
    redelivered = events[::3]
    pubsub_emulator.publish(topic, events + redelivered + [(b"{not json", {}), (b'{"event_id": "x"}', {})])

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.clickstream", "--streaming",
         f"--input_subscription={pubsub_emulator.subscription_of(topic)}", f"--output={output}",
         f"--reference_db={reference}", "--window_seconds=5", "--early_firing_seconds=1",
         "--allowed_lateness_seconds=600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host},
    )
    engine = sa.create_engine(output)
    try:
        deadline, counted, invalid = time.monotonic() + 150, None, None
        while time.monotonic() < deadline and (counted != 45 or invalid != 2):
            time.sleep(2)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            counted, invalid = _counts(engine)
        assert (counted, invalid) == (45, 2), f"counted {counted} events, {invalid} dead letters"
        time.sleep(5)  # later panes must not count the re-deliveries either
        assert _counts(engine) == (45, 2)
        with engine.connect() as conn:
            revenue = conn.exec_driver_sql("SELECT sum(revenue) FROM clickstream_metrics").scalar()
        assert revenue == pytest.approx(2.5 * len(range(0, 45, 4)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        engine.dispose()


def _counts(engine) -> tuple:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("clickstream_metrics") or not sa.inspect(conn).has_table("dead_letters"):
            return None, None
        events = conn.exec_driver_sql("SELECT sum(events) FROM clickstream_metrics").scalar()
        invalid = conn.exec_driver_sql("SELECT count(*) FROM dead_letters WHERE stage = 'parse'").scalar()
    return events, invalid


@pytest.mark.slow
def test_pubsub_down_at_start_is_one_clear_error(tmp_path):
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.clickstream", "--streaming",
         "--input_subscription=projects/p1/subscriptions/s1", f"--output=sqlite:///{tmp_path}/o.db",
         f"--reference_db=sqlite:///{tmp_path}/r.db"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "PUBSUB_EMULATOR_HOST": host},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"clickstream: Pub/Sub at {host} is not reachable"), last


@pytest.mark.slow
@pytest.mark.parametrize("runner", [(), ("--runner=FlinkRunner",)], ids=["direct", "flink"])
def test_iot_streaming_from_pubsub_publishes_alerts(pubsub_emulator, tmp_path, runner):
    """Readings from a subscription (one re-delivered) → an over-threshold alert on the alerts
    topic with its id as an attribute, and the readings counted once in sensor_stats. On Flink the
    readings come through Beam's Java PubsubIO and the alerts leave through the same Python
    publisher. (Not Prism: one burst of messages stalls its watermark, see docs/runners.md.)"""
    readings_topic, alerts_topic = pubsub_emulator.topic(), pubsub_emulator.topic()
    reference, output = tmp_path / "reference.db", f"sqlite:///{tmp_path}/out.db"
    engine = sa.create_engine(f"sqlite:///{reference}")
    with engine.begin() as conn:  # an empty registry: the default threshold, 90 °C
        conn.exec_driver_sql("CREATE TABLE devices (device_id TEXT PRIMARY KEY, facility TEXT, line TEXT, "
                             "zone TEXT, model TEXT, max_temp_c REAL)")
    engine.dispose()
    now = time.time()
    readings = [{"device_id": "oven-1", "device_type": "temperature", "timestamp": format_timestamp(now - 2 + i * 0.1),
                 "value": value, "unit": "celsius", "quality": "good"} for i, value in enumerate([80.0, 120.5, 85.0])]
    messages = [(json.dumps(r).encode(), {}) for r in readings]
    pubsub_emulator.publish(readings_topic, messages + messages[1:2])

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.iot_sensors", "--streaming", *runner,
         f"--input_subscription={pubsub_emulator.subscription_of(readings_topic)}",
         f"--alerts_topic={alerts_topic}", f"--output={output}", f"--reference_db=sqlite:///{reference}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host},
    )
    try:
        alerts = pubsub_emulator.pull(pubsub_emulator.subscription_of(alerts_topic), 1, timeout=150)
        assert alerts, proc.stdout.read().decode()[-3000:] if proc.poll() is not None else "no alert in 150 s"
        body = json.loads(alerts[0].data)
        assert alerts[0].attributes["alert_id"] == body["alert_id"] and body["alert_id"].startswith("oven-1/")
        assert alerts[0].attributes["severity"] == body["severity"] == "critical"
        assert body["max"] == 120.5 and body["threshold"] == 90.0
        parse_timestamp(body["window_start"])  # RFC 3339 text, not an epoch float
        engine = sa.create_engine(output)
        deadline, counted = time.monotonic() + 60, None
        while time.monotonic() < deadline and counted != 3:
            time.sleep(1)
            with engine.connect() as conn:
                if sa.inspect(conn).has_table("sensor_stats"):
                    counted = conn.exec_driver_sql("SELECT sum(count) FROM sensor_stats").scalar()
        engine.dispose()
        assert counted == 3  # the re-delivered reading was dropped
    finally:
        proc.send_signal(signal.SIGINT if runner else signal.SIGTERM)  # Ctrl-C cancels the Flink job
        proc.wait(timeout=120)
