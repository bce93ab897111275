"""Hostile input through the real command line: hundreds of generated records per pipeline, and
the regression corpus, in one file per run, in batch and as a streaming replay.

Each run must exit 0 with a balanced accounting; every dead letter must trace back to exactly
one input line (by its file:line origin, or the line's `fz<n>-`/`cz<n>-` id marker), there must
be exactly as many as the report's rejections, every line known to be bad must be among them,
and no injected IP literal may appear in any output, report or log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest

import hostile
from kappaflow.samples import iot as iot_sample
from kappaflow.samples.clickstream import SampleConfig, build_reference_db
from transforms.parse import DEFAULT_MAX_RECORD_BYTES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fixtures", "hostile")
GENERATED = 300  # records per pipeline and run
REDELIVERIES = 5  # valid lines sent twice
PRIMARY_KEYS = "customers:customer_id,orders:store_id+order_id"
MARKER = re.compile(r"\b(fz|cz)(\d+)-")


def _corpus(pipeline: str) -> list[hostile.Line]:
    """The regression corpus: minimal lines Hypothesis found, one JSON string per line (the
    line's bytes as latin-1 text, so that invalid UTF-8 survives), with the rule each broke."""
    with open(os.path.join(CORPUS, f"{pipeline}.jsonl"), encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    return [(_dated(entry["line"]).encode("latin-1"), entry["must_reject"]) for entry in entries]


def _dated(line: str) -> str:
    """Corpus lines say "an hour ago" with placeholders (the accepted window follows the clock),
    and "a string of --max_record_bytes" (a megabyte need not be in the repository)."""
    hour_ago = time.time() - 3600
    iso = dt.datetime.fromtimestamp(hour_ago, dt.timezone.utc).isoformat(timespec="microseconds")
    offset = dt.datetime.fromtimestamp(hour_ago, dt.timezone(dt.timedelta(hours=2))).isoformat(timespec="microseconds")
    for placeholder, value in (('"%TIME%"', json.dumps(iso)), ('"%TIME_US_OFFSET%"', json.dumps(offset)),
                               ('"%TIME_NS%"', json.dumps(iso.replace("+00:00", "789Z"))),
                               ('"%TSMS%"', str(int(hour_ago * 1000))),
                               ('"%HUGE%"', json.dumps("x" * DEFAULT_MAX_RECORD_BYTES))):
        line = line.replace(placeholder, value)
    return line


SCENARIOS = os.path.join(ROOT, "tests", "fixtures", "scenarios")


def _scenario(pipeline: str) -> list[hostile.Line]:
    """The product scenario's own message (issue 11), exactly as written, where there is one."""
    path = os.path.join(SCENARIOS, f"{pipeline}.json")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        return [(handle.read().strip(), False)]


@dataclasses.dataclass(frozen=True)
class FuzzInput:
    path: str
    lines: list[hostile.Line]  # in file order: scenario, generated + re-deliveries, corpus
    markers: dict[tuple[str, int], int]  # (fz|cz, n) → file line
    extra: tuple[str, ...]
    generation_seconds: float


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, FuzzInput]:
    base = tmp_path_factory.mktemp("hostile")
    clickstream_ref, iot_ref = f"sqlite:///{base}/clickstream_ref.db", f"sqlite:///{base}/iot_ref.db"
    build_reference_db(clickstream_ref, SampleConfig(events=10, users=100, products=10))
    iot_sample.build_reference_db(iot_ref, iot_sample.SampleConfig())
    extra = {"clickstream": (f"--reference_db={clickstream_ref}",), "iot_sensors": (f"--reference_db={iot_ref}",),
             "cdc": (f"--primary_keys={PRIMARY_KEYS}",)}
    out = {}
    for pipeline in hostile.ID_FIELDS:
        started = time.monotonic()
        scenario = _scenario(pipeline)
        generated, positions = _with_redeliveries(hostile.render(pipeline, hostile.generate(pipeline, GENERATED)))
        corpus = _corpus(pipeline)
        markers = {("fz", n): len(scenario) + position for n, position in enumerate(positions, start=1)}
        markers.update({("cz", n): len(scenario) + len(generated) + n for n in range(1, len(corpus) + 1)})
        path = str(base / f"{pipeline}.jsonl")
        hostile.write(path, scenario + generated + corpus)
        out[pipeline] = FuzzInput(path, scenario + generated + corpus, markers, extra[pipeline],
                                  time.monotonic() - started)
    return out


def _with_redeliveries(lines: list[hostile.Line], copies: int = REDELIVERIES) -> tuple[list[hostile.Line], list[int]]:
    """A copy right after each of the first few valid lines, which the dedup must count (a copy
    shares its original's marker: only the original can be dead-lettered, as too late); and the
    file line (1-based) of each generated line."""
    out: list[hostile.Line] = []
    positions = []
    for line in lines:
        out.append(line)
        positions.append(len(out))
        if line[1] is False and copies:
            out.append(line)
            copies -= 1
    return out, positions


@dataclasses.dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    output: str  # the SQLite file
    report: str
    seconds: float


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory) -> dict[tuple[str, str], Run]:
    """Every pipeline in batch and as a streaming replay, two command lines at a time (the
    runs are independent processes; most of each is interpreter and Beam start-up)."""
    base = tmp_path_factory.mktemp("runs")
    pending = [(pipeline, mode) for pipeline in inputs for mode in ("batch", "streaming")]
    done: dict[tuple[str, str], Run] = {}
    running: list = []
    while pending or running:
        while pending and len(running) < 2:
            pipeline, mode = pending.pop(0)
            output, report = base / f"{pipeline}-{mode}.db", base / f"{pipeline}-{mode}.json"
            streaming = ("--streaming", "--replay_chunk_size=100") if mode == "streaming" else ()
            proc = subprocess.Popen(
                [sys.executable, "-m", f"pipelines.{pipeline}", f"--input={inputs[pipeline].path}",
                 f"--output=sqlite:///{output}", f"--report={report}", *inputs[pipeline].extra, *streaming],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            running.append((pipeline, mode, proc, str(output), str(report), time.monotonic()))
        pipeline, mode, proc, output, report, started = running.pop(0)
        stdout, stderr = proc.communicate(timeout=600)
        done[(pipeline, mode)] = Run(proc.returncode, stdout.decode("utf-8", "replace"),
                                     stderr.decode("utf-8", "replace"), output, report, time.monotonic() - started)
    return done


def dead_letters(db: str, pipeline: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM dead_letters WHERE pipeline = ?", (pipeline,)).fetchall()
    return [dict(row) for row in rows]


def line_of(letter: dict, fuzz: FuzzInput) -> int:
    """The input line a dead letter stands for (1-based), by origin or by id marker."""
    origin = re.search(re.escape(os.path.basename(fuzz.path)) + r":(\d+)", letter["origin"] or letter["payload"] or "")
    if origin:
        return int(origin.group(1))
    marker = MARKER.search(letter["event_id"] or "") or MARKER.search(letter["payload"] or "")
    assert marker, f"dead letter traces to no line: {letter}"
    return fuzz.markers[(marker.group(1), int(marker.group(2)))]


def all_output_text(db: str, skip_tables: tuple[str, ...] = ()) -> str:
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(json.dumps(conn.execute(f'SELECT * FROM "{table}"').fetchall(), default=repr)
                         for table in tables if table not in skip_tables)


@pytest.mark.parametrize("mode", ["batch", "streaming"])
@pytest.mark.parametrize("pipeline", ["clickstream", "iot_sensors", "cdc"])
def test_hostile_records_never_stop_a_run_and_every_rejection_is_a_dead_letter(inputs, runs, pipeline, mode):
    fuzz, run = inputs[pipeline], runs[(pipeline, mode)]
    assert run.returncode == 0, run.stderr[-3000:]
    with open(run.report, encoding="utf-8") as handle:
        report_text = handle.read()
    summary = json.loads(report_text)
    assert summary["balanced"], summary
    assert summary["read"] == len(fuzz.lines)
    assert summary["aggregated"] + summary["applied"] + summary["superseded"] > 0, "nothing valid got through"
    assert summary["duplicates"] >= 1  # the re-deliveries

    letters = dead_letters(run.output, pipeline)
    rejected = summary["invalid"] + summary["too_late"] + summary["enrich_failed"] + summary["rejected"]
    traced = [line_of(letter, fuzz) for letter in letters]
    # A re-delivery of a record that is too late is too late as well (lateness is judged before
    # the dedup) and its dead letter is the same row as its original's: the table is keyed so
    # that re-deliveries and reruns upsert one row.
    collapsed = rejected - len(letters)
    assert 0 <= collapsed <= (REDELIVERIES if mode == "streaming" else 0), \
        f"{collapsed} rejected records are missing from the dead letters"
    assert len(set(traced)) == len(traced), "two dead letters for one line"
    must_reject = {number for number, (_, bad) in enumerate(fuzz.lines, start=1) if bad}
    assert must_reject <= set(traced), f"lines known to be bad were accepted: {sorted(must_reject - set(traced))}"
    if mode == "batch":  # (a streaming replay may find a valid record too late)
        must_accept = {number for number, (_, bad) in enumerate(fuzz.lines, start=1) if bad is False}
        assert not must_accept & set(traced), [letters[traced.index(n)] for n in must_accept & set(traced)]
    assert all(letter["reason"] for letter in letters)

    # CDC replicas hold the source rows as they are (that is the product): the check covers
    # everything else the run writes.
    replica = ("customers", "orders") if pipeline == "cdc" else ()
    texts = [all_output_text(run.output, replica), report_text, run.stdout, run.stderr]
    for ip in hostile.IPS:
        assert not any(ip in text for text in texts), f"IP literal {ip} in an output"
    print(f"\n[{pipeline} {mode}] {len(fuzz.lines)} lines, generated in {fuzz.generation_seconds:.1f}s, "
          f"CLI {run.seconds:.1f}s: " + json.dumps({k: summary[k] for k in (
              "read", "invalid", "duplicates", "too_late", "aggregated", "applied", "superseded", "rejected",
              "seconds")}))


# The scenario messages of issue 11 (tests/fixtures/scenarios/), each in its own window: the row
# they aggregate to. IoT: the integer `location.line` is kept as its text.
SCENARIO_ROWS = {
    "clickstream": ("SELECT events, unique_users FROM clickstream_metrics WHERE window_start LIKE "
                    "'2024-01-15T10:30:00%' AND event_type = 'click' AND country = 'unknown'", [(1, 1)]),
    "iot_sensors": ("SELECT count, max, facility, line FROM sensor_stats WHERE device_id = 'sensor_001_line1'",
                    [(1, 72.5, "factory_a", "1")]),
}


@pytest.mark.parametrize("mode", ["batch", "streaming"])
@pytest.mark.parametrize("pipeline", sorted(SCENARIO_ROWS))
def test_the_scenario_message_is_aggregated_not_dead_lettered(runs, pipeline, mode):
    query, expected = SCENARIO_ROWS[pipeline]
    with sqlite3.connect(runs[(pipeline, mode)].output) as conn:
        assert conn.execute(query).fetchall() == expected


def test_the_fuzz_files_break_every_rule_the_pipelines_enforce(inputs):
    """The generator stays hostile: each file has lines over the size limit, with lone
    surrogates, with times no runner can hold, nested too deep, and with the injected IPs."""
    assert hostile.MAX_RECORD_BYTES == DEFAULT_MAX_RECORD_BYTES
    for pipeline, fuzz in inputs.items():
        lines = fuzz.lines
        data = b"\n".join(line for line, _ in lines)
        assert any(len(line) > DEFAULT_MAX_RECORD_BYTES for line, _ in lines), pipeline
        assert re.search(rb"\\u[dD][89abAB]", data), pipeline
        assert b"1e+20" in data or b"1e+308" in data, pipeline
        assert b"[[[[[[[[[[" in data, pipeline
        assert any(ip.encode() in data for ip in hostile.IPS), pipeline
        assert sum(1 for _, bad in lines if bad) >= 5 and sum(1 for _, bad in lines if bad is False) >= 20
