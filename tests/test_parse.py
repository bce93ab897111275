"""ParseEvents: valid events, dead letters naming the field, PII never leaves, read/invalid counters."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord, dead_letter, dead_letter_row, redact_ips
from kappaflow.core.schemas.clickstream import CLICKSTREAM_EVENT
from transforms.parse import DEFAULT_MAX_RECORD_BYTES, ParseEventFn, ParseEvents, PiiHasher

SALT = "test-salt"
T0 = 1704067200.0
IPS = ("10.1.2.3", "192.168.77.201", "172.16.0.9", "10.9.9.9")


def click(event_id="e1", ip="10.1.2.3", **overrides) -> dict:
    event = {"event_id": event_id, "user_id": "u1", "event_type": "purchase",
             "timestamp": "2024-01-01T00:00:00Z", "session_id": "s1",
             "properties": {"product_id": "p1", "price": 9.5},
             "context": {"ip": ip, "user_agent": "ua", "locale": "en"}}
    event.update(overrides)
    return event


def expected_event(event_id, ip, **overrides) -> dict:
    event = {"event_id": event_id, "user_id": "u1", "session_id": "s1", "event_type": "purchase",
             "timestamp": T0, "properties": {"product_id": "p1", "price": 9.5},
             "context": {"ip": PiiHasher(SALT)(ip), "user_agent": "ua", "locale": "en"}}
    event.update(overrides)
    return event


RECORDS = [
    RawRecord(json.dumps(click("e1", IPS[0])).encode(), "in.jsonl:1"),                 # bytes
    RawRecord(json.dumps(click("e2", IPS[1], timestamp=T0)), "in.jsonl:2", 5.0),        # str, ingest time
    RawRecord({**click("e3", IPS[2]), "properties": {"product_id": "p1", "price": "9.5"}},
              "in.csv:2"),                                                              # dict (CSV)
    RawRecord(b'{"event_id": "e4", "context": {"ip": "192.168.0.77"', "in.jsonl:4"),  # bad JSON
    RawRecord(json.dumps({k: v for k, v in click("x", IPS[3]).items() if k != "event_id"}), "in.jsonl:5"),
    RawRecord(json.dumps(click("e6", timestamp="last tuesday")), "in.jsonl:6"),
    RawRecord(json.dumps(click("e7", properties={"price": "cheap"})), "in.jsonl:7"),
    RawRecord(json.dumps(click("e8", user_id=42)), "in.jsonl:8"),
    RawRecord(b"\xff\xfe not utf-8 10.20.30.40", "in.jsonl:9"),
]

EXPECTED_DEAD = [  # (origin, event_id, reason substring)
    ("in.jsonl:4", None, "bad JSON"),
    ("in.jsonl:5", None, "field event_id: is required but missing"),
    ("in.jsonl:6", "e6", "field timestamp: unparseable timestamp"),
    ("in.jsonl:7", "e7", "field properties.price: expected a number"),
    ("in.jsonl:8", "e8", "field user_id: expected a string"),
    ("in.jsonl:9", None, "not UTF-8"),
]

ALL_IPS = (*IPS, "192.168.0.77", "10.20.30.40")


def dead_letters_match(expected):
    def check(actual):
        got = sorted(((d["origin"], d["event_id"], d["reason"], d["stage"], d["pipeline"]) for d in actual),
                     key=lambda g: g[0])
        if len(got) != len(expected):
            raise BeamAssertException(f"expected {len(expected)} dead letters, got {got}")
        for g, (origin, event_id, reason) in zip(got, sorted(expected, key=lambda e: e[0])):
            if g[:2] != (origin, event_id) or reason not in g[2] or g[3:] != ("parse", "clicks"):
                raise BeamAssertException(f"dead letter {g} does not match {(origin, event_id, reason)}")
    return check


def no_ip_in(actual):
    text = json.dumps(list(actual), sort_keys=True, default=str)
    leaked = [ip for ip in ALL_IPS if ip in text]
    if leaked:
        raise BeamAssertException(f"IP addresses {leaked} leaked into the output: {text}")


def test_parse_events_and_dead_letters(run_batch, count_of):
    def build(p):
        parsed = p | beam.Create(RECORDS) | ParseEvents(CLICKSTREAM_EVENT, SALT)
        dead = parsed[DEAD_LETTER_TAG] | "ToRows" >> beam.Map(dead_letter_row, "clicks", "event_id")
        assert_that(parsed.events, equal_to([
            expected_event("e1", IPS[0]),
            {**expected_event("e2", IPS[1]), "_ingest_time": 5.0},
            expected_event("e3", IPS[2]),
        ]), label="events")
        assert_that(dead, dead_letters_match(EXPECTED_DEAD), label="dead")
        assert_that(parsed.events, no_ip_in, label="no_ip_events")
        assert_that(dead, no_ip_in, label="no_ip_dead")

    result = run_batch(build)
    assert count_of(result, "records_read") == len(RECORDS)
    assert count_of(result, "records_invalid") == len(EXPECTED_DEAD)


def run_fn(record: RawRecord, pipeline="clicks"):
    fn = ParseEventFn(CLICKSTREAM_EVENT, SALT)
    fn.setup()
    events, dead = [], []
    for out in fn.process(record):
        if isinstance(out, beam.pvalue.TaggedOutput):
            assert out.tag == DEAD_LETTER_TAG
            dead.append(dead_letter_row(out.value, pipeline, "event_id"))
        else:
            events.append(out)
    return events, dead


def test_dead_letter_keeps_the_payload_with_pii_hashed():
    _, [letter] = run_fn(RawRecord(json.dumps(click("e6", "10.1.2.3", timestamp="never")), "f:6"))
    payload = json.loads(letter["payload"])
    assert payload["context"]["ip"] == PiiHasher(SALT)("10.1.2.3")
    assert payload["timestamp"] == "never" and payload["event_id"] == "e6"
    assert letter["origin"] == "f:6" and letter["pipeline"] == "clicks" and letter["stage"] == "parse"
    assert len(letter["dead_letter_id"]) == 32


def test_bad_json_payload_is_redacted_text():
    _, [letter] = run_fn(RawRecord('{"ip": "10.0.0.1", "v6": "fe80:0:0:0:202:b3ff:fe1e:8329",', "f:1"))
    assert letter["payload"] == '{"ip": "<redacted>", "v6": "<redacted>",'
    assert letter["event_id"] is None and letter["reason"].startswith("bad JSON")


def test_dead_letter_id_is_deterministic():
    record = RawRecord(b"{broken", "f:3")
    assert run_fn(record)[1][0]["dead_letter_id"] == run_fn(record)[1][0]["dead_letter_id"]
    assert run_fn(record)[1][0]["dead_letter_id"] != run_fn(RawRecord(b"{broken", "f:4"))[1][0]["dead_letter_id"]


@pytest.mark.parametrize("payload", [
    json.dumps(["10.66.77.88"]),
    json.dumps(click("e9", context="10.66.77.88")),
])
def test_ip_never_leaks_from_valid_json_of_the_wrong_shape(payload):
    events, dead = run_fn(RawRecord(payload, "f:9"))
    assert events == [] and len(dead) == 1
    assert "10.66.77.88" not in json.dumps(dead)


def test_compressed_ipv6_is_redacted_in_bad_json():
    _, [letter] = run_fn(RawRecord(b'{"ip": "2001:db8::1"', "f:1"))
    assert "2001:db8" not in letter["payload"]


def test_times_and_versions_in_bad_json_are_not_mistaken_for_ips():
    raw = b'{"ts": "2026-01-05T08:00:00.702Z", "v": "1.2.3", "ip": "::1", "ip4": "10.1.2.3"'
    _, [letter] = run_fn(RawRecord(raw, "f:2"))
    assert "08:00:00.702" in letter["payload"] and "1.2.3" in letter["payload"]
    assert "::1" not in letter["payload"] and "10.1.2.3" not in letter["payload"]


# -- hostile payloads (issue 14) ------------------------------------------------------------------

def _letter(payload, max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
    fn = ParseEventFn(CLICKSTREAM_EVENT, SALT, max_record_bytes)
    fn.setup()
    event, rejection = fn._parse(RawRecord(payload, "f.jsonl:7"))
    assert event is None
    return dead_letter_row(rejection, "clickstream", "event_id")


def _nested_lists(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


_GOOD = {"event_id": "e1", "user_id": "u1", "event_type": "click", "timestamp": "2024-01-15T10:30:45Z"}


@pytest.mark.parametrize("payload, reason", [
    (json.dumps({**_GOOD, "user_id": "\ud800"}), "field user_id: string is not valid Unicode"),
    (json.dumps({**_GOOD, "junk": {"k\udfff": 1}}), "field junk.<key>: key"),
    ("[" * 5000, "bad JSON: nested deeper than 64 levels"),
    (json.dumps({**_GOOD, "properties": {"a": _nested_lists(70)}}), "field properties.a[0]"),
    ('{"n": ' + "1" * 5000 + "}", "bad JSON"),
    (json.dumps({**_GOOD, "timestamp": 1e20}), "field timestamp: timestamp 1e+20 is outside"),
    (json.dumps({**_GOOD, "timestamp": 2**70}), "field timestamp"),
])
def test_hostile_payloads_are_dead_letters_naming_the_field(payload, reason):
    letter = _letter(payload.encode("utf-8"))
    assert reason in letter["reason"]
    letter["payload"].encode("utf-8")  # every sink can store it


def test_records_over_the_size_limit_are_dead_letters_before_parsing():
    letter = _letter(b'{"event_id": "' + b"x" * 200 + b'"}', max_record_bytes=100)
    assert letter["reason"] == "record is 216 bytes, over the limit of 100 (--max_record_bytes)"
    with pytest.raises(ValueError, match="max_record_bytes"):
        ParseEventFn(CLICKSTREAM_EVENT, SALT, 0)


def test_dead_letters_redact_ips_everywhere_and_stay_encodable():
    letter = dead_letter("p", "parse", "field ip=2001:db8::42: bad", "x 10.0.0.1:8080 \ud800 fe80::1.",
                         "f:1", event_id="id-192.168.1.1")
    for ip in ("2001:db8::42", "10.0.0.1", "fe80::1", "192.168.1.1"):
        assert ip not in json.dumps(letter)
    assert letter["payload"] == "x <redacted>:8080 \\ud800 <redacted>."


@pytest.mark.parametrize("text, expected", [
    ('{"ip": "\\u00e92001:db8::42"}', '{"ip": "\\u00e9<redacted>"}'),  # IPv6 glued to an escape
    ('{"ip": "\\ud800fe80::1ff:fe23:4567:890a"}', '{"ip": "\\ud800<redacted>"}'),
    ("x\\u00e9192.168.1.1", "x\\u00e9<redacted>"),  # IPv4: the escape's last digit touched it
    ("\\u00e9::1", "\\u00e9<redacted>"),  # the escape itself stays whole
    ("\\xe910.0.0.1:8080", "\\xe9<redacted>:8080"),
    ("2001:db8::42\\u00e9", "<redacted>\\u00e9"),
    ("\\u0030\\u0041 08:00:00", "\\u0030\\u0041 08:00:00"),
])
def test_ips_glued_to_escapes_are_redacted(text, expected):
    assert redact_ips(text) == expected


def test_dead_letter_of_json_with_escaped_text_before_an_ip_is_redacted():
    letter = dead_letter("p", "parse", "bad", {"ip": "\u00e92001:db8::42", "v4": "\ud800192.168.1.1"})
    assert "2001:db8::42" not in letter["payload"] and "192.168.1.1" not in letter["payload"]


def test_ip_redaction_is_linear_on_hostile_text():
    import time

    started = time.monotonic()
    redact_ips("1." * 200_000 + "_")
    redact_ips("1" * 100_000 + "." + "1" * 100_000 + "." + "1" * 100_000 + "x")
    redact_ips("\\u00e9" * 100_000 + "::1")
    redact_ips("\\u00e9::" * 100_000)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("salt", ["", "kappaflow", "ü" * 40, "k" * 64, "k" * 65, "long salt " * 30])
def test_pii_hash_is_hmac_sha256_of_the_salt_cut_to_128_bits(salt):
    import hmac
    import random

    hasher = PiiHasher(salt, remembered=4)  # small: the cache is also emptied on the way
    rng = random.Random(salt)
    for value in ["", "10.1.2.3", "é", *("".join(rng.choices("0123456789.:abcdef", k=rng.randint(1, 200)))
                                         for _ in range(20))]:
        expected = hmac.digest(salt.encode("utf-8"), value.encode("utf-8"), "sha256").hex()[:32]
        assert hasher(value) == expected == hasher(value)


def _parse_all(fn: ParseEventFn, records: list) -> tuple[list, list]:
    """(events, rejections) of `fn` run directly on `records`."""
    fn.setup()
    outputs = [out for record in records for out in fn.process(record)]
    letters = [out.value for out in outputs if isinstance(out, beam.pvalue.TaggedOutput)]
    return [out for out in outputs if not isinstance(out, beam.pvalue.TaggedOutput)], letters


def test_a_payload_decoded_for_its_event_time_is_not_decoded_again_by_the_parser(monkeypatch):
    """The replay source reads each record's time (EventTimeOf) just before the parser, fused
    behind it, sees the same bytes: the parser takes that decode instead of repeating it, and
    still applies its own size limit and validation."""
    from transforms import parse
    from transforms.event_time import EventTimeOf

    decodes = []
    real = parse._decode_json
    monkeypatch.setattr(parse, "_decode_json", lambda raw: decodes.append(raw) or real(raw))
    payload = json.dumps(click()).encode()
    record = RawRecord(payload, "replay.jsonl:1")

    assert EventTimeOf("timestamp")(record) is not None
    events, letters = _parse_all(ParseEventFn(CLICKSTREAM_EVENT, "salt"), [record])
    assert len(events) == 1 and not letters and len(decodes) == 1

    # Taken once: the same bytes parsed again are decoded again.
    events, _ = _parse_all(ParseEventFn(CLICKSTREAM_EVENT, "salt"), [record])
    assert len(events) == 1 and len(decodes) == 2

    # A parser with a smaller --max_record_bytes still refuses what the time reader decoded.
    EventTimeOf("timestamp")(record)
    _, letters = _parse_all(ParseEventFn(CLICKSTREAM_EVENT, "salt", max_record_bytes=10), [record])
    assert len(letters) == 1 and "over the limit of 10" in letters[0].reason

    # Still handed over (the refusal did not take it): reading the time again decodes nothing.
    EventTimeOf("timestamp")(record)
    assert len(decodes) == 3
    # Equal bytes in another object are not the handed-over payload.
    _parse_all(ParseEventFn(CLICKSTREAM_EVENT, "salt"), [RawRecord(bytes(bytearray(payload)), "other:1")])
    assert len(decodes) == 4
