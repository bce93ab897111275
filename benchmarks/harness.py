"""Shared by the benchmark scripts: run a command in its own process, time it, read its peak RSS."""

from __future__ import annotations

import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(argv: list[str]) -> tuple[float, float, str]:
    """Run a command; return wall seconds, peak RSS in MiB, and its last output line."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return seconds, usage.ru_maxrss / 1024, out.strip().splitlines()[-1] if out.strip() else ""


def report(rows: list[tuple[str, float, float]], lines: int) -> None:
    """rows: (label, wall seconds, peak MiB); the first is measured against the second."""
    print(f"\n{'':32}{'events/s':>12}{'wall s':>10}{'peak RSS MiB':>15}")
    for label, seconds, mib in rows:
        print(f"{label:32}{lines / seconds:>12,.0f}{seconds:>10.1f}{mib:>15,.0f}")
    (_, a_s, a_mb), (_, b_s, b_mb) = rows[0], rows[1]
    print(f"ratio (a)/(b): throughput {b_s / a_s:.3f}x, peak RSS {a_mb / b_mb:.2f}x "
          f"({lines:,} input lines; wall time includes interpreter start-up)")
