"""Choose a source from its configuration (kappaflow/wiring.py builds it from the options): files
(batch, or replayed in event time when streaming), a Pub/Sub subscription (streaming: Beam's Python
read, or its Java PubsubIO on Prism and Flink; io_connectors/pubsub.py), a BigQuery table
(`--input=bigquery:PROJECT.DATASET.TABLE`, batch backfills), Kafka topics
(`--input=kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]`, streaming; io_connectors/kafka.py)."""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.io import fileio

from io_connectors.bigquery import ReadBigQueryRows, is_bigquery_url
from io_connectors.files import expand_pattern, file_format, read_records
from io_connectors.kafka import KafkaReadConfig, ReadKafkaRecords, is_kafka_url
from io_connectors.pubsub import PubSubReadConfig, ReadPubSubRecords, ReadPubSubRecordsThroughJava
from io_connectors.replay import ReplayConfig, ReplayFiles
from kappaflow.core.records import BOUNDED_WATERMARK, RawRecord

__all__ = ["ReadFiles", "ReadInput"]


class ReadFiles(beam.PTransform):
    """Files (globs, comma-separated) → bounded PCollection of RawRecords."""

    def __init__(self, pattern: str, ingest_time_field: Optional[str] = None) -> None:
        super().__init__()
        self._pattern = pattern
        self._ingest_time_field = ingest_time_field

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        patterns = [p.strip() for p in self._pattern.split(",") if p.strip()]
        for pattern in patterns:
            file_format(pattern)  # the extension decides the reader: fail at construction
            if "://" not in pattern:
                expand_pattern(pattern)  # local: say now that nothing matches, not on a worker
        # Remote globs (gs://...) are matched when the job runs: a template is built elsewhere.
        return (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRecords" >> beam.FlatMap(read_bounded, self._ingest_time_field)
        )


def read_bounded(path: str, ingest_time_field: Optional[str] = None) -> Iterator[RawRecord]:
    """A file's records, each stamped with a bounded source's watermark: nothing is late in batch."""
    for payload, origin, ingest_time, _ in read_records(path, ingest_time_field):
        yield RawRecord(payload, origin, ingest_time, BOUNDED_WATERMARK)  # not _replace: a third of the cost


class ReadInput(beam.PTransform):
    """`--input` → RawRecords: files in batch, the same files replayed in event time when
    streaming; or the messages of a Pub/Sub subscription or of Kafka topics; or the rows of a
    BigQuery table. `ingest_time_field`: a top-level field of the files (or Kafka records) that
    holds the ingest time (Pub/Sub messages carry their publish time instead, Kafka records
    without the option their timestamp)."""

    def __init__(
        self,
        url: Optional[str],
        streaming: bool,
        event_time: Callable[[RawRecord], Optional[float]],
        replay: ReplayConfig = ReplayConfig(),
        ingest_time_field: Optional[str] = None,
        pubsub: Optional[PubSubReadConfig] = None,
        bigquery_endpoint: Optional[str] = None,
        kafka: Optional[KafkaReadConfig] = None,
    ) -> None:
        super().__init__()
        if is_kafka_url(url):
            if not streaming:
                raise ValueError(f"reading {url} needs --streaming")
            kafka = kafka or KafkaReadConfig(url, ingest_time_field=ingest_time_field)
        self._kafka = kafka
        if pubsub is not None and not streaming:
            raise ValueError(f"reading {pubsub.subscription} needs --streaming")
        if pubsub is None and not url:
            raise ValueError("no input: give --input or --input_subscription")
        if is_bigquery_url(url) and streaming:
            raise ValueError(f"{url}: a BigQuery table is a batch input (for backfills); drop --streaming")
        self._url = url
        self._streaming = streaming
        self._event_time = event_time
        self._replay = replay
        self._ingest_time_field = ingest_time_field
        self._pubsub = pubsub
        self._bigquery_endpoint = bigquery_endpoint

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if self._pubsub is not None:
            # The config says which read its runner has (kappaflow/wiring.py chose it).
            read = ReadPubSubRecords if self._pubsub.java is None else ReadPubSubRecordsThroughJava
            return pbegin | "ReadPubSub" >> read(self._pubsub)
        if self._kafka is not None:
            return pbegin | "ReadKafka" >> ReadKafkaRecords(self._kafka)
        if is_bigquery_url(self._url):
            return pbegin | "ReadBigQuery" >> ReadBigQueryRows(self._url, self._bigquery_endpoint)
        if self._streaming:
            return pbegin | "ReplayFiles" >> ReplayFiles(
                self._url, self._event_time, self._replay, self._ingest_time_field)
        return pbegin | "ReadFiles" >> ReadFiles(self._url, self._ingest_time_field)
