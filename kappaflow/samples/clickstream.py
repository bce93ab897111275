"""Deterministic clickstream sample: events with duplicates, disorder, too-late and bad records,
plus the reference database (users, products) that the pipeline enriches from.

    python -m kappaflow.samples.clickstream --events 100000 --out events.jsonl --reference_db ref.db
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Iterator

import sqlalchemy as sa

from kappaflow.core.sql import create_engine
from kappaflow.samples import Arrivals, SampleCommand

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc).timestamp()
EVENT_TYPES = (("page_view", 0.60), ("click", 0.25), ("add_to_cart", 0.10), ("purchase", 0.05))
COUNTRIES = ("US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "ES", "NL")
SEGMENTS = ("new", "returning", "vip")
CATEGORIES = ("books", "games", "garden", "kitchen", "music", "toys")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    events: int = 100_000
    seed: int = 42
    events_per_second: float = 15.0  # of event time
    users: int = 5_000
    known_user_share: float = 0.95  # the rest is missing from `users`: country 'unknown'
    products: int = 500
    duplicate_share: float = 0.02
    malformed_share: float = 0.005
    too_late_share: float = 0.001
    too_late_delay_seconds: tuple[float, float] = (1_500.0, 3_000.0)  # beyond 15 min lateness
    mean_delay_seconds: float = 4.0  # ordinary network delay: out-of-order within a minute

    def __post_init__(self) -> None:
        if self.events < 1 or not 0 <= self.duplicate_share < 1 or not 0 <= self.malformed_share < 1:
            raise ValueError("invalid sample configuration")


def _timestamp_text(rng: random.Random, seconds: float) -> object:
    """Every accepted form: ISO with Z, ISO with an offset, epoch seconds, epoch milliseconds."""
    form = rng.random()
    moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    if form < 0.55:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if form < 0.70:
        offset = dt.timezone(dt.timedelta(hours=2))
        return moment.astimezone(offset).isoformat(timespec="milliseconds")
    if form < 0.85:
        return int(seconds * 1000)
    return round(seconds, 3)


def _event(rng: random.Random, config: SampleConfig, index: int, seconds: float) -> dict:
    roll, cumulative, event_type = rng.random(), 0.0, EVENT_TYPES[-1][0]
    for name, share in EVENT_TYPES:
        cumulative += share
        if roll < cumulative:
            event_type = name
            break
    product = rng.randrange(config.products)
    properties: dict = {"product_id": f"p{product:04d}", "page": f"/product/{product}"}
    if event_type == "purchase":
        properties["price"] = round(rng.uniform(2, 300), 2)
    return {
        "event_id": f"e{index:09d}",
        "user_id": f"u{rng.randrange(int(config.users / config.known_user_share)):06d}",
        "session_id": f"s{rng.randrange(config.users * 4):07d}",
        "event_type": event_type,
        "timestamp": _timestamp_text(rng, seconds),
        "properties": properties,
        "context": {
            "ip": f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "user_agent": rng.choice(("Mozilla/5.0", "okhttp/4.12", "Safari/17.2")),
            "locale": rng.choice(("en-US", "de-DE", "fr-FR", "ja-JP")),
        },
    }


def _malformed(rng: random.Random, event: dict) -> str:
    kind = rng.randrange(5)
    broken = json.loads(json.dumps(event))
    if kind == 0:
        return json.dumps(event)[: rng.randrange(10, 60)]  # bad JSON: truncated
    if kind == 1:
        del broken["event_id"]
    elif kind == 2:
        broken["timestamp"] = rng.choice(("yesterday", "2026-13-45T99:00:00Z", "2026-01-05 08:00:00"))
    elif kind == 3:
        broken["properties"]["price"] = "twelve"
    else:
        broken["user_id"] = rng.randrange(10**6)  # wrong type: a number where a string belongs
    return json.dumps(broken)


def generate(config: SampleConfig) -> Iterator[str]:
    """JSON lines in arrival order (sorted by arrival time, so event time is out of order)."""
    rng = random.Random(config.seed)
    arrivals = Arrivals(rng, config.duplicate_share, redelivery_seconds=30)
    for index in range(config.events):
        seconds = START + index / config.events_per_second + rng.uniform(0, 1 / config.events_per_second)
        event = _event(rng, config, index, seconds)
        delay = rng.expovariate(1 / config.mean_delay_seconds)
        if rng.random() < config.too_late_share:
            delay = rng.uniform(*config.too_late_delay_seconds)
        line = _malformed(rng, event) if rng.random() < config.malformed_share else json.dumps(event)
        arrivals.add(seconds + delay, index, line)
    yield from arrivals.in_order()


def build_reference_db(url: str, config: SampleConfig) -> None:
    rng = random.Random(config.seed + 1)
    engine = create_engine(url)  # postgresql:// means the driver we ship
    meta = sa.MetaData()
    users = sa.Table("users", meta, sa.Column("user_id", sa.Text, primary_key=True),
                     sa.Column("country", sa.Text), sa.Column("segment", sa.Text))
    products = sa.Table("products", meta, sa.Column("product_id", sa.Text, primary_key=True),
                        sa.Column("category", sa.Text))
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(users.insert(), [
            {"user_id": f"u{i:06d}", "country": rng.choice(COUNTRIES), "segment": rng.choice(SEGMENTS)}
            for i in range(config.users)
        ])
        conn.execute(products.insert(), [
            {"product_id": f"p{i:04d}", "category": rng.choice(CATEGORIES)} for i in range(config.products)
        ])
    engine.dispose()


SAMPLE = SampleCommand(__doc__, SampleConfig, "events", generate, build_reference_db, "reference tables users, products")
write_sample = SAMPLE.write


if __name__ == "__main__":
    SAMPLE.main()
