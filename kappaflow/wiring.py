"""Options → the connectors' configurations: the one place where a run's flags (and its runner)
become the plain config objects that sources and sinks are built from. The connectors never read
pipeline options themselves."""

from __future__ import annotations

import os
from typing import Callable, Optional

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from io_connectors.bigquery import BigQueryWriteConfig
from io_connectors.dead_letter_sink import WriteDeadLetters
from io_connectors.kafka import (
    KafkaReadConfig, KafkaWriteConfig, is_kafka_url, parse_kafka_config, shared_security_settings)
from io_connectors.pubsub import JavaPubSub, PubSubReadConfig
from io_connectors.sources import ReadInput
from kappaflow import java_services
from kappaflow.core.records import RawRecord
from kappaflow.options import KafkaOptions, KappaflowOptions
from kappaflow.runner_support import reads_pubsub_through_java, runner_name
from transforms.dead_letters import DeadLetters
from transforms.event_time import EventTimeOf

__all__ = ["read_input", "dead_letters", "kafka_read_config", "kafka_write_config", "bigquery_method",
           "bigquery_write_config", "java_pubsub"]

# Prism 2.70 (the local streaming runner) intermittently never finishes a pipeline whose repeated
# processing-time trigger fires more than once (the SDK logs `KeyError: 'instNN'` on bundle
# release). On the local runners BigQuery loads and merges therefore fire every this many staged
# files; other runners fire every --bigquery_firing_seconds.
LOCAL_FILES_PER_FIRING = 100
_FIRE_BY_FILES_RUNNERS = (None, "DirectRunner", "direct", "PrismRunner", "prism")


def kafka_read_config(opts: PipelineOptions, ingest_time_field: Optional[str] = None) -> Optional[KafkaReadConfig]:
    """The Kafka read the options ask for (`--input=kafka://...`), else None."""
    url = getattr(opts, "input", None)
    if not is_kafka_url(url):
        return None
    kafka = opts.view_as(KafkaOptions)
    return KafkaReadConfig(url, kafka.kafka_consumer_group, parse_kafka_config(kafka.kafka_config),
                           kafka.kafka_max_records, kafka.kafka_max_read_seconds, kafka.java_worker_pool,
                           expansion_service=java_services.expansion_service, ingest_time_field=ingest_time_field)


def kafka_write_config(opts: PipelineOptions, url: str) -> KafkaWriteConfig:
    """A Kafka topic to write to (`url`), with the security settings of `--kafka_config`."""
    kafka = opts.view_as(KafkaOptions)
    return KafkaWriteConfig(url, shared_security_settings(parse_kafka_config(kafka.kafka_config)),
                            kafka.java_worker_pool, java_services.expansion_service)


def java_pubsub(opts: PipelineOptions) -> Optional[JavaPubSub]:
    """Beam's Java PubsubIO for runners without Beam's Python Pub/Sub read (Prism, Flink), else None.
    `PUBSUB_EMULATOR_HOST` (host:port), which points the Python clients at an emulator, points the
    Java workers there too (Java's `pubsubRootUrl`)."""
    if not reads_pubsub_through_java(opts):
        return None
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    return JavaPubSub(root_url=f"http://{emulator}" if emulator else None,
                      java_worker_pool=opts.view_as(KafkaOptions).java_worker_pool,
                      expansion_service=java_services.expansion_service)


def read_input(
    opts: KappaflowOptions, time_field: str, id_field: Optional[str] = None,
    event_time: Optional[Callable[[RawRecord], Optional[float]]] = None,
    ingest_time_field: Optional[str] = None,
) -> ReadInput:
    """The source the options ask for. `time_field` holds event time in the payload;
    `event_time` reads it from a file record for the replay (default: that field)."""
    pubsub = None
    if opts.input_subscription:
        pubsub = PubSubReadConfig(opts.input_subscription, time_field, id_field,
                                  opts.timestamp_attribute, opts.pubsub_id_label, java_pubsub(opts))
    # Out-of-bounds times (dead-lettered later) must not move a replay's watermark.
    bounded_time = opts.event_time_bounds().guard(event_time or EventTimeOf(time_field))
    return ReadInput(opts.input, bool(opts.view_as(StandardOptions).streaming),
                     bounded_time, opts.replay_config(), ingest_time_field,
                     pubsub, opts.bigquery_endpoint, kafka_read_config(opts, ingest_time_field))


def bigquery_method(opts: KappaflowOptions) -> str:
    """--bigquery_method, with AUTO decided for the run. Streaming takes the exactly-once Storage Write
    API where it runs: on Flink, from a live source (a replay's end never finishes it there; Prism
    2.70 cannot build it; see kappaflow/runner_support.py), writing to BigQuery itself (Beam's Java
    client dials a local endpoint's gRPC with TLS, which a local emulator does not offer). Elsewhere
    AUTO stays: load jobs in batch, streaming inserts in streaming (docs/bigquery.md)."""
    live = bool(getattr(opts, "input_subscription", None)) or is_kafka_url(opts.input)
    if (opts.bigquery_method == "AUTO" and opts.view_as(StandardOptions).streaming and live
            and runner_name(opts) == "FlinkRunner" and not opts.bigquery_endpoint):
        return "STORAGE_WRITE_API"
    return opts.bigquery_method


def bigquery_write_config(opts: KappaflowOptions) -> BigQueryWriteConfig:
    """How the run writes a bigquery: output, chosen once here for its runner."""
    streaming = bool(opts.view_as(StandardOptions).streaming)
    local = opts.view_as(StandardOptions).runner in _FIRE_BY_FILES_RUNNERS
    return BigQueryWriteConfig(
        method=bigquery_method(opts), streaming=streaming,
        temp_location=opts.view_as(GoogleCloudOptions).temp_location, endpoint=opts.bigquery_endpoint,
        firing_seconds=opts.bigquery_firing_seconds, files_per_firing=LOCAL_FILES_PER_FIRING if local else None,
        java_worker_pool=opts.view_as(KafkaOptions).java_worker_pool, expansion_service=java_services.expansion_service)


def dead_letters(opts: KappaflowOptions, pipeline: str, id_field: Optional[str] = None) -> DeadLetters:
    """The run's one dead-letter path: the stages' rejections → `pipeline`'s rows in the
    `dead_letters` table of --dead_letters_url (by default --output); `id_field`: the record id."""
    return DeadLetters(WriteDeadLetters(opts.dead_letters_url, pipeline, id_field, bigquery_write_config(opts)))
