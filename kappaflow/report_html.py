"""`--report=run.html`: one static page about a run, with plotly charts and plotly's JavaScript
inlined (it ships in the plotly package), so it opens from disk with no server and no network.

What it shows: the accounting as a flow (read → each outcome → the output table or the dead
letters), the dead letters by stage and reason with a few redacted examples each (read back from
the dead-letter output), events per window over event time with the windows a late pane corrected
marked (read back from the output table), the progress seen while it ran, and the runner, options
and durations. Outputs that cannot be read back from here (BigQuery, directories) are named instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import re
import time
from typing import Any, Optional, Sequence

import sqlalchemy as sa
from apache_beam.options.pipeline_options import PipelineOptions

from io_connectors.sinks import is_database_url
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_SCHEMA
from kappaflow.core.schema import Schema
from kappaflow.core.sql import create_engine, safe_url
from kappaflow.options import KappaflowOptions
from kappaflow.progress import Snapshot

__all__ = ["ReportData", "gather", "render", "render_report", "redact", "reason_kind"]

EXAMPLES_PER_REASON = 3
MAX_REASONS = 25
_EXAMPLE_CHARS = 300
# The accounting outcomes, in the order the flow picture stacks them; where each record ends.
_SECRET_OPTIONS = {"pii_salt"}
_REDACTIONS = (
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "<email>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "<ip>"),
    (re.compile(r"\b\d{12,19}\b"), "<number>"),  # card and phone numbers
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),  # passwords in URLs
)


def redact(text: Optional[str]) -> str:
    """A dead-letter payload as the report shows it: PII-like values masked, at most 300 characters.
    (The pipelines already hash the fields their schemas mark as PII; this catches the rest.)"""
    text = text or ""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= _EXAMPLE_CHARS else text[:_EXAMPLE_CHARS] + " …"


@dataclasses.dataclass(frozen=True)
class DeadLetterGroup:
    stage: str
    reason: str
    count: int
    examples: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WindowPoint:
    window_start: float
    events: int
    corrected: bool  # a late pane (after the watermark) updated this window


@dataclasses.dataclass(frozen=True)
class ReportData:
    accounting: dict[str, Any]
    options: dict[str, Any]
    dead_letters: tuple[DeadLetterGroup, ...]
    windows: tuple[WindowPoint, ...]
    progress: tuple[Snapshot, ...]
    notes: tuple[str, ...]
    written_at: float


def _window_table(pipeline: str) -> Optional[tuple[Schema, str]]:
    """The pipeline's windowed output table and the column counting its events."""
    if pipeline == "clickstream":
        from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS

        return CLICKSTREAM_METRICS, "events"
    if pipeline == "iot_sensors":
        from kappaflow.core.schemas.iot import SENSOR_STATS

        return SENSOR_STATS, "count"
    return None


def reason_kind(reason: str) -> str:
    """A reason without its values, so that one kind of fault is one group: "field user_id: expected
    a string, got int 709653" and "... got int 98109" are the same kind."""
    text = re.sub(r"'[^']*'", "'…'", reason)
    text = re.sub(r"\[[^\])]*\)", "[…)", text)  # a window [start, end)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?", "<time>", text)
    return re.sub(r"(?<![\w.])-?\d+(\.\d+)?(?![\w.])", "N", text)


def _read_dead_letters(url: str, pipeline: str, since: float) -> tuple[DeadLetterGroup, ...]:
    engine = create_engine(url)
    table = DEAD_LETTER_SCHEMA.sqlalchemy_table(sa.MetaData())
    try:
        if not sa.inspect(engine).has_table(table.name):
            return ()
        mine = sa.and_(table.c.pipeline == pipeline, table.c.rejected_at >= since)
        with engine.connect() as conn:
            counts = conn.execute(
                sa.select(table.c.stage, table.c.reason, sa.func.count()).where(mine)
                .group_by(table.c.stage, table.c.reason)).all()
            kinds: dict[tuple[str, str], list] = {}
            for stage, reason, count in counts:
                kind = kinds.setdefault((stage, reason_kind(reason)), [0, []])
                kind[0] += count
                kind[1].append(reason)
            biggest = sorted(kinds.items(), key=lambda item: (-item[1][0], item[0]))[:MAX_REASONS]
            groups = []
            for (stage, kind), (count, reasons) in biggest:
                payloads = conn.execute(
                    sa.select(table.c.payload).where(mine, table.c.stage == stage,
                                                     table.c.reason.in_(sorted(reasons)[:EXAMPLES_PER_REASON]))
                    .order_by(table.c.origin).limit(EXAMPLES_PER_REASON)).scalars().all()
                groups.append(DeadLetterGroup(stage, kind, count, tuple(redact(p) for p in payloads)))
    finally:
        engine.dispose()
    return tuple(groups)


def _read_windows(url: str, schema: Schema, measure: str, since: float) -> tuple[WindowPoint, ...]:
    engine = create_engine(url)
    table = schema.sqlalchemy_table(sa.MetaData())
    try:
        if not sa.inspect(engine).has_table(table.name):
            return ()
        late = sa.func.max(sa.case((table.c.pane_timing == "LATE", 1), else_=0))
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.window_start, sa.func.sum(table.c[measure]), late)
                .where(table.c.updated_at >= since).group_by(table.c.window_start)
                .order_by(table.c.window_start)).all()
    finally:
        engine.dispose()
    return tuple(WindowPoint(schema_time(start), int(total or 0), bool(corrected)) for start, total, corrected in rows)


def schema_time(value: Any) -> float:
    from kappaflow.core.schema import parse_timestamp

    return value if isinstance(value, float) else parse_timestamp(value)


def _shown_options(options: PipelineOptions) -> dict[str, Any]:
    """The options this run set (not Beam's defaults), secrets masked and URL passwords hidden."""
    shown = {}
    for name, value in sorted(options.get_all_options(drop_default=True).items()):
        if value is None or value is False:
            continue
        if name in _SECRET_OPTIONS:
            value = "***"
        elif isinstance(value, str) and "://" in value:
            value = safe_url(value)
        shown[name] = value
    return shown


def gather(accounting: Any, options: PipelineOptions, samples: Sequence[Snapshot] = (),
           now: Optional[float] = None) -> ReportData:
    """Everything the page shows, read back from where the run wrote it."""
    now = time.time() if now is None else now
    since = now - accounting.seconds - 5.0  # rows this run wrote (reruns on one database keep older rows)
    own = options.view_as(KappaflowOptions)
    notes = []
    dead: tuple[DeadLetterGroup, ...] = ()
    if is_database_url(own.dead_letters_url):
        dead = _read_dead_letters(own.dead_letters_url, accounting.pipeline, since)
    else:
        notes.append(f"Dead letters went to {own.dead_letters_url}; this report reads back database outputs only.")
    windows: tuple[WindowPoint, ...] = ()
    table = _window_table(accounting.pipeline)
    if table is not None and is_database_url(own.output):
        windows = _read_windows(own.output, *table, since)
    elif table is not None:
        notes.append(f"Rows went to {own.output}; this report reads back database outputs only.")
    return ReportData(
        accounting={**dataclasses.asdict(accounting), "balanced": accounting.balanced},
        options=_shown_options(options), dead_letters=dead, windows=windows, progress=tuple(samples),
        notes=tuple(notes), written_at=now)


# ---------------------------------------------------------------------------------------- charts

def _flow_figure(acc: dict[str, Any]):
    import plotly.graph_objects as go

    outcomes = [(name, outcome.ends_in, acc.get(name, 0)) for name, outcome in metrics.OUTCOMES.items()
                if acc.get(name, 0)]
    labels = [f"read {acc['read']:,}"] + [f"{n.replace('_', ' ')} {v:,}" for n, _, v in outcomes]
    sinks = {"table": f"output table: {acc['rows_written']:,} rows written",
             "dead": f"dead letters: {acc['dead_letters_written']:,} written",
             "dropped": "dropped on purpose"}
    used = [k for k in ("table", "dead", "dropped") if any(kind == k for _, kind, _ in outcomes)]
    labels += [sinks[k] for k in used]
    colors = {"table": "#2e7d32", "dead": "#c62828", "dropped": "#9e9e9e"}
    faint = {"table": "rgba(46,125,50,0.25)", "dead": "rgba(198,40,40,0.35)", "dropped": "rgba(158,158,158,0.35)"}
    source, target, value, link_colors = [], [], [], []
    for i, (_, kind, count) in enumerate(outcomes, start=1):
        source += [0, i]
        target += [i, 1 + len(outcomes) + used.index(kind)]
        value += [count, count]
        link_colors += [faint[kind], faint[kind]]
    node_colors = ["#1565c0"] + [colors[kind] for _, kind, _ in outcomes] + [colors[k] for k in used]
    figure = go.Figure(go.Sankey(
        arrangement="snap", valueformat=",d", valuesuffix=" records",
        node=dict(label=labels, color=node_colors, pad=18, thickness=18),
        link=dict(source=source, target=target, value=value, color=link_colors)))
    figure.update_layout(height=360, margin=dict(l=10, r=10, t=10, b=10), font_size=13)
    return figure


def _dead_letter_figure(groups: Sequence[DeadLetterGroup]):
    import plotly.graph_objects as go

    figure = go.Figure()
    for stage in sorted({g.stage for g in groups}):
        mine = [g for g in groups if g.stage == stage]
        figure.add_trace(go.Bar(
            name=stage, orientation="h", x=[g.count for g in mine],
            y=[f"{g.stage}: {g.reason[:70]}" for g in mine],
            hovertext=[g.reason for g in mine], hoverinfo="x+text"))
    figure.update_layout(height=120 + 28 * len(groups), margin=dict(l=10, r=10, t=10, b=30),
                         barmode="stack", yaxis=dict(autorange="reversed", automargin=True),
                         xaxis_title="dead letters", legend_title_text="stage")
    return figure


def _windows_figure(points: Sequence[WindowPoint]):
    import plotly.graph_objects as go

    times = [dt.datetime.fromtimestamp(p.window_start, dt.timezone.utc).isoformat() for p in points]
    figure = go.Figure(go.Bar(x=times, y=[p.events for p in points], name="events per window",
                              marker_color="#1565c0"))
    corrected = [(t, p.events) for t, p in zip(times, points) if p.corrected]
    if corrected:
        figure.add_trace(go.Scatter(
            x=[t for t, _ in corrected], y=[e for _, e in corrected], mode="markers",
            name="corrected by a late pane", marker=dict(symbol="diamond", size=10, color="#ef6c00")))
    figure.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=30), xaxis_title="window start (UTC)",
                         yaxis_title="events", bargap=0.05, legend=dict(orientation="h", y=1.1))
    return figure


def _progress_figure(samples: Sequence[Snapshot]):
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[s.elapsed for s in samples], y=[s.read for s in samples],
                                mode="lines+markers", name="records read"))
    figure.add_trace(go.Scatter(x=[s.elapsed for s in samples], y=[s.dead_letters for s in samples],
                                mode="lines+markers", name="dead letters"))
    figure.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=30), xaxis_title="seconds since the start",
                         legend=dict(orientation="h", y=1.15))
    return figure


# ------------------------------------------------------------------------------------------ page

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2e7d32; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
code, pre { font: 12px ui-monospace, monospace; background: #f6f6f6; }
pre { padding: 6px; white-space: pre-wrap; word-break: break-all; margin: 2px 0; }
.note { color: #666; } .chart { min-height: 120px; }
"""


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        css = ' class="n"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        cells.append(f"<tr><th>{html.escape(str(key))}</th><td{css}>{html.escape(str(shown))}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _chart(figure: Any, div_id: str) -> str:
    return (f'<div class="chart" data-chart="{div_id}">'
            + figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                             config={"displaylogo": False, "responsive": True})
            + "</div>")


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(data: ReportData) -> str:
    import plotly.offline

    acc = data.accounting
    rate = acc["read"] / acc["seconds"] if acc["seconds"] else 0.0
    verdict = ('<span class="ok">accounting balanced</span>' if acc["balanced"]
               else '<span class="bad">accounting UNBALANCED</span>')
    written = _utc(data.written_at)
    parts = [
        f"<h1>kappaflow {html.escape(acc['pipeline'])}: {acc['mode']} run</h1>",
        f"<p>{verdict} · {acc['read']:,} records read in {acc['seconds']:.1f} s ({rate:,.0f} records/s) on "
        f"{html.escape(acc['runner'])} · report written {written}</p>",
        "<h2>Where every record went</h2>", _chart(_flow_figure(acc), "flow"),
        _table([(k.replace("_", " "), v) for k, v in acc.items()
                if isinstance(v, int) and not isinstance(v, bool) and (v or k == "read")]),
        "<h2>Dead letters by stage and reason</h2>",
    ]
    if data.dead_letters:
        parts.append(_chart(_dead_letter_figure(data.dead_letters), "dead_letters"))
        for group in data.dead_letters:
            examples = "".join(f"<pre>{html.escape(e)}</pre>" for e in group.examples)
            parts.append(f"<details><summary><b>{html.escape(group.stage)}</b>: {html.escape(group.reason)} "
                         f"({group.count:,})</summary>{examples}</details>")
    else:
        parts.append('<p class="note">No dead letters read back for this run.</p>')
    parts.append("<h2>Events per window (event time)</h2>")
    if data.windows:
        corrected = sum(p.corrected for p in data.windows)
        parts.append(f'<p class="note">{len(data.windows):,} windows; {corrected:,} corrected by a late pane '
                     "(records that arrived after the watermark, within the allowed lateness).</p>")
        parts.append(_chart(_windows_figure(data.windows), "windows"))
    else:
        parts.append('<p class="note">No windowed output read back for this run.</p>')
    if len(data.progress) >= 2:
        parts += ["<h2>Progress while it ran</h2>", _chart(_progress_figure(data.progress), "progress")]
    parts += ["<h2>Runner, durations and options</h2>",
              _table([("runner", acc["runner"]), ("mode", acc["mode"]),
                      ("started", _utc(data.written_at - acc["seconds"])), ("finished", _utc(data.written_at)),
                      ("run time (s)", round(acc["seconds"], 2)), ("records/s", round(rate))]),
              "<h3>Options given</h3>", _table(list(data.options.items()))]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in data.notes]
    accounting_json = json.dumps(acc, sort_keys=True).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>kappaflow {html.escape(acc['pipeline'])} run report</title><style>{_STYLE}</style>"
            f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            + "\n".join(parts)
            + f'<script type="application/json" id="accounting">{accounting_json}</script>'
            + "</body></html>\n")


def render_report(accounting: Any, options: PipelineOptions, samples: Sequence[Snapshot] = ()) -> str:
    return render(gather(accounting, options, samples))
