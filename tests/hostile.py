"""Hypothesis strategies of hostile input lines for each pipeline, and the file writer the fuzz
suite (tests/test_hostile_input.py) runs through the command line.

A generated line is (bytes, must_reject): `must_reject` is True when the line breaks a rule the
pipelines promise to enforce (the line must then be in the dead letters), None when it may or
may not be valid (a mutated record: the pipeline decides).

Records are built around a valid one and mutated: wrong types, empty and huge strings, lone
surrogates, numbers at and beyond every limit, deep nesting, duplicated and conflicting keys, IP
literals (which must never reach an output), Debezium envelopes with missing or contradictory
parts. Every line carries a unique `fz<n>` marker in its id field when it has one, so a dead
letter written after parsing (which has no file:line origin) can be traced to its line.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Iterable, Optional

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

# Injected IP literals: none of them may appear in any output, report or log.
IPS = ("192.168.1.1", "203.0.113.77", "10.20.30.40", "2001:db8::42", "fe80::1ff:fe23:4567:890a")
# The pipelines' default --max_record_bytes (transforms/parse.py): "huge" lines are just over it.
MAX_RECORD_BYTES = 1 << 20

NOW = time.time()

Line = tuple[bytes, Optional[bool]]

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.characters(codec="utf-8"), max_size=30)  # every code point but surrogates
unicode_edge = st.sampled_from([
    "", " ", "\x00", "\u200b", "\u202e" + "evil", "\ufeff", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "é" * 40, "\n\r\t",
    "'; DROP TABLE users; --", "\" OR 1=1 --", "<script>alert(1)</script>", "%s%s%n", "../../etc/passwd",
])
# Exactly one surrogate: two adjacent ones could pair into a valid character after json.loads.
with_surrogate = st.builds(lambda a, s, b: a + s + b, any_text, lone_surrogates, any_text)
paired_surrogates = st.just("\ud83d\ude00")  # escaped pair = 😀: valid, must be accepted
# "é"/a lone surrogate before the address: in JSON text a \\uXXXX escape whose hex digits touch it.
ip_text = st.sampled_from(IPS).flatmap(lambda ip: st.sampled_from(
    [ip, f"ip={ip}", f"{ip}:8080", f"[{ip}]", f"{ip}.", f"\u00e9{ip}", f"\udbff{ip}"]))
huge_text = st.integers(MAX_RECORD_BYTES, MAX_RECORD_BYTES + 100).map(lambda n: "x" * n)
long_text = st.integers(100, 3000).map(lambda n: "y" * n)
limit_numbers = st.sampled_from([
    0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**70, -(2**70), 10**30, 10**400,
    1e20, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf, 0.1, -0.0,
])
numbers = st.one_of(limit_numbers, st.integers(), st.floats(allow_nan=True, allow_infinity=True))


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"n": value}
    return value


deep = st.integers(60, 400).map(nested)  # around MAX_NESTING (64): some accepted, most not
too_deep = st.integers(70, 400).map(nested)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text, unicode_edge, with_surrogate, paired_surrogates,
                    ip_text)
hostile_values = st.one_of(
    scalars, long_text, deep,
    st.lists(scalars, max_size=4), st.dictionaries(any_text, scalars, max_size=3),
)


def valid_times(now: float) -> st.SearchStrategy:
    """Times of the last half hour in every accepted form."""
    recent = st.floats(now - 1800, now - 60)
    return st.one_of(
        recent.map(lambda s: _iso(s, "+02:00")),                     # microseconds and an offset
        recent.map(lambda s: _iso(s, "Z")),
        recent.map(lambda s: int(s * 1000)), recent.map(lambda s: round(s, 3)),
        recent.map(lambda s: _iso(s, "Z").replace("Z", "123Z")),      # nanoseconds
    )


def times(now: float) -> st.SearchStrategy:
    """Event times: valid in every accepted form, and at and beyond every limit."""
    return st.one_of(
        valid_times(now),
        st.sampled_from([
            -1, 0, 1e20, 1e308, 2**70, 10**400, math.nan, math.inf, "1e20", "NaN", "-5",
            "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
            "2100-01-01T00:00:00Z", "2024-01-15T10:30:45", "2024-02-30T00:00:00Z", "yesterday",
            now + 2 * 86400, int((now + 400 * 86400) * 1000),
        ]),
        hostile_values,
    )


def _iso(seconds: float, zone: str) -> str:
    import datetime as dt

    tz = dt.timezone(dt.timedelta(hours=2)) if zone == "+02:00" else dt.timezone.utc
    text = dt.datetime.fromtimestamp(seconds, tz).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def mutate(base: dict, paths: list[tuple[str, ...]], values: st.SearchStrategy) -> st.SearchStrategy:
    """`base` with 1-3 of its `paths` set to hostile values or removed, maybe an extra key."""
    mutation = st.tuples(st.sampled_from(paths), st.one_of(values, st.just(_DELETE)))

    def apply(changes: list, extra: Optional[tuple]) -> dict:
        record = json.loads(json.dumps(base))
        for path, value in changes:
            node = record
            for part in path[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            if value is _DELETE:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
        if extra is not None:
            record[extra[0]] = extra[1]
        return record

    return st.builds(apply, st.lists(mutation, min_size=1, max_size=3),
                     st.one_of(st.none(), st.tuples(st.one_of(any_text, with_surrogate, ip_text), hostile_values)))


_DELETE = object()


def raw_lines() -> st.SearchStrategy:
    """Lines that are not one JSON object: bytes, broken JSON, other JSON values."""
    return st.one_of(
        st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b and b.strip()),
        st.sampled_from([b"{", b"}", b'{"a":', b"null", b"[]", b"42", b'"text"', b"NaN", b"\xff\xfe\x00",
                         b"SELECT * FROM users WHERE '1'='1'", b"{'single': 'quotes'}", b'{"a": 1,}',
                         ("[" * 3000).encode(), ("{\"a\":" * 800).encode(), b"1" * 4400,
                         b"[" * (MAX_RECORD_BYTES + 1)]),
        hostile_values.map(lambda v: _dumps(v)),
    )


def duplicate_keys(base: dict, keys: list[str], values: st.SearchStrategy,
                   outputs: tuple[str, ...] = ()) -> st.SearchStrategy:
    """JSON text with a key given twice (the later wins in Python's json, not everywhere). No IP
    under the `outputs` keys: their values are written as they are (a device id, an event type)."""
    def text(key: str, value: Any, last: bool) -> bytes:
        body, extra = _dumps(base)[1:-1], json.dumps(key).encode() + b": " + _dumps(value)
        return b"{" + (body + b", " + extra if last else extra + b", " + body) + b"}"

    pairs = st.tuples(st.sampled_from(keys), values).filter(lambda kv: not (kv[0] in outputs and _ip_in(kv[1])))
    return st.builds(lambda kv, last: text(kv[0], kv[1], last), pairs, st.booleans())


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8")


def lines_for(pipeline: str, now: float = NOW) -> st.SearchStrategy:
    return _BUILDERS[pipeline](now)


def _clickstream(now: float) -> st.SearchStrategy:
    base = {
        "event_id": "e", "user_id": "u000001", "session_id": "s1", "event_type": "purchase",
        "timestamp": _iso(now - 3600, "+02:00"),
        "properties": {"product_id": "p0001", "price": 29.99},
        "context": {"ip": IPS[0], "user_agent": "Mozilla/5.0", "locale": "en_US"},
    }
    paths = [("event_id",), ("user_id",), ("session_id",), ("event_type",), ("timestamp",), ("properties",),
             ("properties", "product_id"), ("properties", "price"), ("context",), ("context", "ip"),
             ("context", "user_agent")]
    valid = st.builds(lambda t, ip, price, kind: {**base, "timestamp": t, "event_type": kind,
                                                  "properties": {"product_id": "p0002", "price": price},
                                                  "context": {**base["context"], "ip": ip}},
                      valid_times(now),
                      st.sampled_from(IPS), st.floats(0, 1000), st.sampled_from(["click", "purchase", "view"]))
    no_ip_in_outputs = mutate(base, paths, st.one_of(hostile_values, times(now))).filter(
        lambda r: not _ip_in(r.get("event_type")))
    return _mix(base, valid, no_ip_in_outputs, paths, must_reject={
        "timestamp": st.sampled_from([1e20, 1e308, 2**70, math.nan, math.inf, -1, "1969-12-31T23:59:59Z"]),
        "user_id": with_surrogate, "event_id": huge_text,
        "properties": st.one_of(too_deep, st.sampled_from([1e308, -1e300, 1e13]).map(lambda v: {"price": v}))},
        outputs=("event_type",))


def _iot(now: float) -> st.SearchStrategy:
    base = {
        "device_id": "d", "device_type": "temperature", "timestamp": int((now - 3600) * 1000), "value": 72.5,
        "unit": "celsius", "location": {"facility": "factory_a", "line": 1, "zone": "assembly"},
        "quality": "good", "battery_voltage": 4.8,
    }
    paths = [("device_id",), ("device_type",), ("timestamp",), ("value",), ("unit",), ("location",),
             ("location", "line"), ("location", "zone"), ("quality",), ("battery_voltage",)]
    ranges = {"temperature": ("celsius", -273.15, 2000), "pressure": ("hPa", 0, 1e6), "humidity": ("percent", 0, 100)}
    valid = st.builds(
        lambda t, kind, value, line: {**base, "timestamp": t, "device_type": kind, "unit": ranges[kind][0],
                                      "value": value, "location": {**base["location"], "line": line}},
        valid_times(now),
        st.sampled_from(sorted(ranges)), st.floats(0, 100), st.one_of(st.integers(0, 99), st.text(max_size=8)))
    no_ip_in_outputs = mutate(base, paths, st.one_of(hostile_values, times(now))).filter(
        lambda r: not any(_ip_in(v) for v in (r.get("device_id"), r.get("location"))))
    return _mix(base, valid, no_ip_in_outputs, paths, must_reject={
        "value": st.sampled_from([1e308, -1e308, 1e6, -300.0, math.nan, math.inf, 2**70]),
        "timestamp": st.sampled_from([1e20, 1e308, 2**70, -1, "1969-12-31T23:59:59Z"]),
        "device_id": with_surrogate, "location": too_deep}, outputs=("device_id", "location"))


def _cdc(now: float) -> st.SearchStrategy:
    ts_ms = int((now - 3600) * 1000)
    base = {"before": None, "after": {"customer_id": 1, "name": "Ann", "email": "ann@example.com"},
            "source": {"connector": "postgresql", "db": "shop", "table": "customers", "ts_ms": ts_ms, "lsn": 1000},
            "op": "c", "ts_ms": ts_ms + 5}
    paths = [("op",), ("before",), ("after",), ("source",), ("source", "table"), ("source", "lsn"),
             ("source", "ts_ms"), ("source", "file"), ("source", "pos"), ("ts_ms",), ("after", "customer_id"),
             ("after", "name"), ("after", "email"), ("after", "score")]
    columns = st.sampled_from(["customer_id", "name", "email", "score", "active", "x" * 63, "x" * 64,
                               "Name With Space", "_cdc_version", "1abc"])
    image = st.dictionaries(columns, st.one_of(st.integers(-5, 5), st.text(max_size=5), hostile_values), max_size=4)
    valid = st.builds(
        lambda key, op, lsn, name, table: {**base, "op": op, "before": {"customer_id": key, "store_id": 1, "order_id": key},
                                           "after": None if op == "d" else {"customer_id": key, "store_id": 1,
                                                                             "order_id": key, "name": name},
                                           "source": {**base["source"], "lsn": lsn, "table": table}},
        st.integers(1, 50), st.sampled_from("crud"), st.integers(0, 2**40), st.text(max_size=10),
        st.sampled_from(["customers", "orders"]))
    envelope_parts = st.one_of(hostile_values, times(now), image, st.sampled_from(["c", "u", "d", "r", "x", "", "C"]),
                               st.sampled_from(["customers", "orders", "t" * 64, "audit log", IPS[1]]))
    contradictory = st.builds(lambda e, wrap: {"schema": {}, "payload": e, "op": "c"} if wrap else e,
                              mutate(base, paths, envelope_parts), st.booleans())
    wrapped = valid.map(lambda e: {"schema": {"type": "struct"}, "payload": e})
    long_table = {**base, "source": {**base["source"], "table": "t" * 64}}
    return _mix(base, st.one_of(valid, wrapped), contradictory, paths, must_reject={
        "source": st.just(long_table["source"]), "op": st.sampled_from(["x", "", "C"]),
        "after": st.one_of(st.just({"customer_id": 1, "c" * 64: 1}),
                           huge_text.map(lambda text: {"customer_id": 1, "name": text})),
        "ts_ms": st.sampled_from([1e20, 2**70, math.nan])})


def _mix(base: dict, valid: st.SearchStrategy, mutated: st.SearchStrategy, paths: list,
         must_reject: dict[str, st.SearchStrategy], outputs: tuple[str, ...] = ()) -> st.SearchStrategy:
    """Valid records, mutated ones, known-bad ones (must be rejected) and raw garbage."""
    known_bad = st.one_of(*(
        strategy.map(lambda v, k=key: {**base, k: v}) for key, strategy in must_reject.items()))
    kinds = {
        "valid": valid.map(lambda r: (r, False)),
        "mutated": mutated.map(lambda r: (r, None)),
        "known bad": known_bad.map(lambda r: (r, True)),
        "duplicate keys": duplicate_keys(base, [p[0] for p in paths], hostile_values, outputs).map(
            lambda b: (b, None)),
        "raw": raw_lines().map(lambda b: (b, None)),
    }
    # A third valid, so every run aggregates something; Hypothesis' one_of does not weigh.
    weights = ["valid"] * 4 + ["mutated"] * 4 + ["known bad", "duplicate keys", "raw"] * 1
    return st.sampled_from(weights).flatmap(kinds.__getitem__)


_BUILDERS: dict[str, Callable[[float], st.SearchStrategy]] = {
    "clickstream": _clickstream, "iot_sensors": _iot, "cdc": _cdc}
ID_FIELDS = {"clickstream": "event_id", "iot_sensors": "device_id", "cdc": None}


def _ip_in(value: Any) -> bool:
    text = json.dumps(value, default=str)
    return any(ip in text for ip in IPS)


def generate(pipeline: str, count: int, now: float = NOW) -> list[tuple[Any, Optional[bool]]]:
    """`count` examples of the pipeline's line strategy, drawn by Hypothesis (no shrinking: a
    failure is a whole CLI run, reproduced from the file the test keeps)."""
    drawn: list[tuple[Any, Optional[bool]]] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(lines_for(pipeline, now))
    def draw(example: tuple[Any, Optional[bool]]) -> None:
        drawn.append(example)

    draw()
    return drawn


def render(pipeline: str, examples: Iterable[tuple[Any, Optional[bool]]]) -> list[Line]:
    """Examples → file lines; records get their unique `fz<n>` marker (see the module doc)."""
    id_field = ID_FIELDS[pipeline]
    out: list[Line] = []
    for number, (example, must_reject) in enumerate(examples, start=1):
        if isinstance(example, dict):
            example = _marked(example, id_field, f"fz{number}-")
            data = json.dumps(example, allow_nan=True).encode("utf-8")
        elif id_field:  # JSON text (duplicated keys): mark every string value of the id field
            data = example.replace(f'"{id_field}": "'.encode(), f'"{id_field}": "fz{number}-'.encode())
        else:
            data = example
        out.append((data, must_reject))
    return out


def _marked(record: dict, id_field: Optional[str], marker: str) -> dict:
    value = record.get(id_field) if id_field else None  # CDC changes carry their file:line origin
    if isinstance(value, str):
        return {**record, id_field: marker + value}
    return record


def write(path: str, lines: Iterable[Line]) -> None:
    with open(path, "wb") as handle:
        for data, _ in lines:
            handle.write(data + b"\n")
