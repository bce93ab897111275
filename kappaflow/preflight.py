"""Check at launch that every server a run's options name answers, so a server that is down
gives one clear error naming it instead of a worker's traceback."""

from __future__ import annotations

from typing import Callable, Iterator

from functools import partial

from io_connectors.bigquery import check_bigquery, is_bigquery_url
from io_connectors.kafka import check_kafka, is_kafka_url
from io_connectors.pubsub import check_subscription, check_topic
from io_connectors.sinks import is_database_url
from io_connectors.sql_sink import check_database
from kappaflow.options import KappaflowOptions

__all__ = ["EndpointUnavailable", "check_endpoints"]


class EndpointUnavailable(RuntimeError):
    """A server the run needs did not answer; the message names it."""


def _checks(opts: KappaflowOptions) -> Iterator[tuple[str, Callable[[str], None]]]:
    seen = set()
    for url in (opts.input, opts.output, opts.dead_letters_url, getattr(opts, "reference_db", None)):
        if not url or url in seen:
            continue
        seen.add(url)
        if is_bigquery_url(url):
            yield url, partial(check_bigquery, endpoint=opts.bigquery_endpoint)
        elif is_kafka_url(url):
            yield url, check_kafka
        elif is_database_url(url) and url != opts.input:
            yield url, check_database
    # Flags of some pipelines only (PubSubInputOptions, the IoT flags).
    subscription, topic = getattr(opts, "input_subscription", None), getattr(opts, "alerts_topic", None)
    if subscription:
        yield subscription, check_subscription
    if topic:
        yield topic, check_topic


def check_endpoints(opts: KappaflowOptions) -> None:
    for url, check in _checks(opts):
        try:
            check(url)
        except ConnectionError as err:
            raise EndpointUnavailable(str(err)) from None
