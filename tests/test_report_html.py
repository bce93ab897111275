"""Progress lines and the HTML run report: one real streaming replay through the command line, its
report rendered by headless Chromium (Debian's package, scripts/setup-chromium.sh), which must
log nothing to the console and draw every chart with data in it."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess

import pytest

from kappaflow import cli
from kappaflow.report_html import reason_kind, redact
from conftest import clickstream_sample
from pipelines import clickstream

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=10000")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "Chromium is installed by `make browser` (scripts/setup-chromium.sh)"
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    """A streaming replay of 1,000 events through `kappaflow clickstream`, with plain progress lines."""
    work = tmp_path_factory.mktemp("report")
    clickstream_sample(work, events=1000, seed=11)

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = cli.run_pipeline_command(
            "clickstream", clickstream.build, clickstream.ClickstreamOptions,
            [f"--input={work}/events.jsonl", f"--reference_db=sqlite:///{work}/ref.db",
             f"--output=sqlite:///{work}/out.db", "--streaming", "--progress=plain", "--progress_seconds=0.2",
             # Paced (67 s of event time at 20x, in chunks of 200): an unpaced replay of 1,000
             # events can end before the first progress poll.
             "--replay_speed=20", "--replay_chunk_size=200",
             "--pii_salt=test-salt", f"--report={work}/run.html"])
    return work, status, out.getvalue(), err.getvalue()


def test_plain_progress_lines_show_live_counters(replay_run):
    _, status, out, err = replay_run
    assert status == 0, err[-2000:]
    summary = re.search(r"read ([\d,]+) \|", out.splitlines()[-1])
    final = int(summary.group(1).replace(",", ""))
    seen = [int(m.replace(",", "")) for m in re.findall(r"^clickstream: read ([\d,]+) \(", err, re.M)]
    assert seen and seen[-1] == final
    assert any(0 < n < final for n in seen), err  # counted while the job ran, not only at the end
    assert re.search(r"event time 2026-\d\d-\d\d \d\d:\d\d:\d\dZ", err)  # the replay's position


def test_report_renders_in_headless_chromium_with_every_chart_drawn(replay_run, tmp_path):
    work, status, _, _ = replay_run
    assert status == 0
    page = (work / "run.html").read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img)\b[^>]*\s(src|href)=", page)  # nothing to fetch at view time
    accounting = json.loads(re.search(r'<script type="application/json" id="accounting">(.*?)</script>',
                                      page).group(1))
    assert accounting["balanced"] and accounting["read"] > 1000
    proc = chromium(tmp_path, "--dump-dom", f"file://{work}/run.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    dom = proc.stdout
    charts = dict(re.findall(r'data-chart="(\w+)">(.*?)(?=<div class="chart" data-chart=|<h2>|$)', dom, re.S))
    assert set(charts) == {"flow", "dead_letters", "windows", "progress"}
    for name, chart in charts.items():
        assert 'class="main-svg"' in chart, name  # plotly drew it
    assert charts["flow"].count('class="sankey-node"') >= 4  # read, outcomes, where they went
    for name in ("dead_letters", "windows", "progress"):
        assert chart_marks(charts[name]) > 0, name  # not an empty chart
    # The dead letters read back: the sample's malformed lines, grouped by reason with examples.
    assert accounting["invalid"] > 0 and "<details><summary><b>parse</b>" in dom
    assert "test-salt" not in page  # the salt is masked in the options table


def chart_marks(chart_dom: str) -> int:
    """Drawn data marks: markers are `point` paths, bars paths in `point` groups, lines `js-line` paths,
    each with a shape (an empty trace draws none)."""
    markers = re.findall(r'<path class="point"[^>]*\sd="M[^"]+"', chart_dom)
    bars = re.findall(r'<g class="point"><path d="M[^"]+"', chart_dom)
    lines = re.findall(r'<path class="js-line"[^>]*\sd="M[^"]+"', chart_dom)
    return len(markers) + len(bars) + len(lines)


def test_chromium_catches_a_console_error(tmp_path):
    """The check above can fail: a page that raises logs to the console."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>Plotly.newPlot('x', [])</script></body></html>")
    proc = chromium(tmp_path, "--dump-dom", f"file://{bad}")
    assert any(":CONSOLE" in line and "Plotly is not defined" in line for line in proc.stderr.splitlines())


def test_redact_masks_what_looks_personal():
    text = redact('{"email": "ann@example.com", "ip": "203.0.113.9", "card": "4111111111111111", '
                  '"db": "postgresql://etl:hunter2@10.0.0.1/x"}' + "x" * 400)
    assert "ann@example.com" not in text and "203.0.113.9" not in text and "4111111111111111" not in text
    assert "hunter2" not in text and text.endswith(" …") and len(text) < 320


def test_reasons_group_by_kind_not_by_value():
    assert reason_kind("field user_id: expected a string, got int 709653") == reason_kind(
        "field user_id: expected a string, got int 98109")
    assert reason_kind("field timestamp: unparseable timestamp '2026-13-45T99:00:00Z'") == (
        "field timestamp: unparseable timestamp '…'")
    late = reason_kind("event time 2026-01-05T08:00:13.637000Z is too late for window [2026-01-05T08:00:00Z, "
                       "2026-01-05T08:01:00Z): the watermark passed its end + allowed lateness (900s)")
    assert late == "event time <time> is too late for window […): the watermark passed its end + allowed lateness (900s)"
