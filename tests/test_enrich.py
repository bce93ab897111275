"""Enrichment from a real SQLite database and from a side-input reference file."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
import sqlalchemy as sa
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from io_connectors.reference_files import ReadReferenceTable
from kappaflow.core.records import DEAD_LETTER_TAG, dead_letter_row
from kappaflow.core.retry import RetryPolicy
from transforms.enrich_database import EnrichFromDatabase, LookupSpec
from transforms.enrich_side_input import EnrichFromSideInput

USERS = LookupSpec("users", "user_id", "user_id", {"country": "country", "segment": "segment"},
                   defaults={"country": "unknown", "segment": "unknown"})
INJECTIONS = ("x' OR '1'='1", "'; DROP TABLE users; --")


@pytest.fixture
def reference_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'reference.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (user_id TEXT PRIMARY KEY, country TEXT, segment TEXT)")
        conn.exec_driver_sql("INSERT INTO users VALUES ('u1', 'DE', 'pro'), ('u2', 'FR', 'free'), "
                             "('u3', 'US', NULL)")
    yield url, engine
    engine.dispose()


@pytest.mark.parametrize("whole_table_rows, ttl, queries", [
    # The table (3 rows) is read whole once; every key, found or missing, comes from the cache.
    (100_000, 300.0, 1),
    # Larger than a whole read may hold: that one read, then per key: u1..u3, cache for the next
    # five batches, the three unknown keys in the last (None is never queried).
    (2, 300.0, 3),
    # No cache: each of the 7 batches of 10 asks for its keys.
    (100_000, 0.0, 7),
])
def test_enrich_from_database(reference_db, run_batch, count_of, monkeypatch, whole_table_rows, ttl, queries):
    import transforms.enrich_database

    monkeypatch.setattr(transforms.enrich_database, "WHOLE_TABLE_ROWS", whole_table_rows)
    url, engine = reference_db
    known = [{"event_id": f"e{i}", "user_id": f"u{i % 3 + 1}"} for i in range(60)]
    odd = [{"event_id": "m1", "user_id": "u9"}, {"event_id": "m2", "user_id": None},
           {"event_id": "m3", "user_id": INJECTIONS[0]}, {"event_id": "m4", "user_id": INJECTIONS[1]}]
    looked_up = {"u1": ("DE", "pro"), "u2": ("FR", "free"), "u3": ("US", None)}
    expected = [{**e, "country": looked_up[e["user_id"]][0], "segment": looked_up[e["user_id"]][1]}
                for e in known]
    expected += [{**e, "country": "unknown", "segment": "unknown"} for e in odd]

    def build(p):
        enriched = (p | beam.Create(known + odd, reshuffle=False)
                    | EnrichFromDatabase(url, [USERS], batch_size=10, cache_ttl_seconds=ttl))
        assert_that(enriched.events, equal_to(expected), label="events")
        assert_that(enriched[DEAD_LETTER_TAG], equal_to([]), label="dead")

    result = run_batch(build)
    assert count_of(result, "lookup_key_missing") == len(odd)
    assert count_of(result, "lookup_queries") == queries
    assert count_of(result, "enrich_failed") == 0
    with engine.connect() as conn:  # bound parameters: the "injections" were only compared
        assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 3


def test_enrich_copies_columns_under_new_names(reference_db, run_batch):
    url, _ = reference_db
    spec = LookupSpec("users", "user_id", "uid", {"country": "user_country"}, defaults={"user_country": "??"})

    def build(p):
        enriched = (p | beam.Create([{"uid": "u2"}, {"uid": "nobody"}, {"other": 1}])
                    | EnrichFromDatabase(url, [spec]))
        assert_that(enriched.events, equal_to([
            {"uid": "u2", "user_country": "FR"}, {"uid": "nobody", "user_country": "??"},
            {"other": 1, "user_country": "??"}]))

    run_batch(build)


def test_keep_existing_keeps_the_events_own_values_where_the_reference_has_none(reference_db, run_batch):
    url, _ = reference_db
    spec = LookupSpec("users", "user_id", "user_id", {"country": "country", "segment": "segment"},
                      defaults={"segment": "basic"}, keep_existing=True)
    events = [{"user_id": "u1", "country": "XX", "segment": "own"},   # the reference wins
              {"user_id": "u3", "country": None, "segment": "own"},   # NULL segment: the event's own
              {"user_id": "u9", "country": "XX", "segment": None},    # missing: own country, default segment
              {"user_id": "u9"}]

    def build(p):
        enriched = p | beam.Create(events) | EnrichFromDatabase(url, [spec])
        assert_that(enriched.events, equal_to([
            {"user_id": "u1", "country": "DE", "segment": "pro"},
            {"user_id": "u3", "country": "US", "segment": "own"},
            {"user_id": "u9", "country": "XX", "segment": "basic"},
            {"user_id": "u9", "country": None, "segment": "basic"}]))

    run_batch(build)


def enrich_dead_letters(expected_ids: set, timestamps: dict):
    def check(actual):
        got = {d["event_id"]: d for d in (dead_letter_row(r, "test", "event_id") for r in actual)}
        if set(got) != expected_ids:
            raise BeamAssertException(f"dead letters for {sorted(got)}, expected {sorted(expected_ids)}")
        for event_id, d in got.items():
            if (d["stage"] != "enrich" or "unavailable after 2 attempts" not in d["reason"]
                    or d["event_time"] != timestamps[event_id]
                    or json.loads(d["payload"])["event_id"] != event_id):
                raise BeamAssertException(f"bad dead letter {d}")
    return check


@pytest.mark.parametrize("url", [
    "sqlite:///{tmp}/no/such/dir/reference.db",
    "postgresql+psycopg2://kf:kf@127.0.0.1:1/x",
    "postgresql://kf:kf@127.0.0.1:1/x",
])
def test_database_down_dead_letters_every_event(url, tmp_path, run_batch, count_of):
    url = url.format(tmp=tmp_path)
    times = {f"e{i}": 1000.0 + i for i in range(5)}
    events = [TimestampedValue({"event_id": k, "user_id": "u1"}, t) for k, t in times.items()]

    def build(p):
        enriched = (p | beam.Create(events)
                    | EnrichFromDatabase(url, [USERS], batch_size=2,
                                         retry=RetryPolicy(attempts=2, initial_backoff_seconds=0.01)))
        assert_that(enriched.events, equal_to([]), label="events")
        assert_that(enriched[DEAD_LETTER_TAG], enrich_dead_letters(set(times), times), label="dead")

    result = run_batch(build)  # does not raise
    assert count_of(result, "enrich_failed") == len(times)
    assert count_of(result, "lookup_queries") == 0


def test_retry_policy():
    assert list(RetryPolicy(attempts=5, initial_backoff_seconds=1, max_backoff_seconds=3).backoffs()) == [1, 2, 3, 3]
    assert list(RetryPolicy(attempts=1).backoffs()) == []
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        LookupSpec("users", "user_id", "user_id", {"country": "country"}, defaults={"segment": "x"})
    with pytest.raises(ValueError):
        EnrichFromDatabase("sqlite://", [USERS], batch_size=0)


def test_enrich_from_side_input_csv_and_jsonl(tmp_path, run_batch, count_of):
    (tmp_path / "users.csv").write_text("user_id,country,segment\nu1,DE,pro\nu2,FR,free\n", encoding="utf-8")
    (tmp_path / "products.jsonl").write_text(
        json.dumps({"product_id": "p1", "category": "books"}) + "\n"
        + json.dumps({"product_id": "p2", "category": "toys"}) + "\n", encoding="utf-8")
    products = LookupSpec("products", "product_id", "product_id", {"category": "category"},
                          defaults={"category": "unknown"})

    def build(p):
        users = p | "Users" >> ReadReferenceTable(str(tmp_path / "users.csv"), "user_id")
        catalog = p | "Products" >> ReadReferenceTable(str(tmp_path / "*.jsonl"), "product_id")
        events = p | beam.Create([
            {"event_id": "e1", "user_id": "u1", "product_id": "p2"},
            {"event_id": "e2", "user_id": "u2", "product_id": "p9"},
            {"event_id": "e3", "user_id": "u7", "product_id": "p1"},
        ])
        enriched = (events
                    | "EnrichUsers" >> EnrichFromSideInput(users, USERS)
                    | "EnrichProducts" >> EnrichFromSideInput(catalog, products))
        assert_that(enriched, equal_to([
            {"event_id": "e1", "user_id": "u1", "product_id": "p2", "country": "DE", "segment": "pro",
             "category": "toys"},
            {"event_id": "e2", "user_id": "u2", "product_id": "p9", "country": "FR", "segment": "free",
             "category": "unknown"},
            {"event_id": "e3", "user_id": "u7", "product_id": "p1", "country": "unknown", "segment": "unknown",
             "category": "books"},
        ]))

    result = run_batch(build)
    assert count_of(result, "lookup_key_missing") == 2
