"""Shared by the benchmark scripts: run a command in its own process, time it, read its peak RSS."""

from __future__ import annotations

import glob
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


def count_lines(pattern: str) -> int:
    """Input lines in the files matching `pattern` (a path or a glob)."""
    total = 0
    for path in glob.glob(pattern):
        with open(path, "rb") as handle:
            total += sum(1 for _ in handle)
    return total


def beam_against_baseline(beam_argv: list[str], baseline_argv: list[str], lines: int) -> None:
    """Run the Beam pipeline (batch, DirectRunner) and the plain-Python baseline, each in its own
    process, and print their events/s, peak RSS and ratios."""
    print("running the Beam pipeline (batch, DirectRunner) ...", flush=True)
    beam_s, beam_mb, beam_line = measure(beam_argv)
    print(f"  {beam_line}")
    print("running the plain-Python baseline ...", flush=True)
    base_s, base_mb, _ = measure(baseline_argv)
    report([("(a) Beam batch, DirectRunner", beam_s, beam_mb), ("(b) plain Python baseline", base_s, base_mb)],
           lines)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def peak_rss_mib(pid: int) -> float:
    """A live process's peak RSS (VmHWM) in MiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_tree(argv: list[str], poll_seconds: float = 0.2) -> tuple[float, dict[str, float], str]:
    """Run a command; return wall seconds, peak RSS in MiB of it and of each kind of descendant
    (e.g. the Flink job server JVM it starts), and its last output line."""
    import threading

    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            stack = [proc.pid]
            while stack:
                pid = stack.pop()
                stack.extend(_children(pid))
                try:
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
                        name = "python" if pid == proc.pid else handle.read().strip()
                except OSError:
                    continue
                peaks[pid] = (name, max(peaks.get(pid, (name, 0.0))[1], peak_rss_mib(pid)))
            done.wait(poll_seconds)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    out = proc.stdout.read()
    proc.wait()
    done.set()
    poller.join()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed")
    by_kind: dict[str, float] = {}
    for name, mib in peaks.values():
        by_kind[name] = max(by_kind.get(name, 0.0), mib)
    return seconds, by_kind, out.strip().splitlines()[-1] if out.strip() else ""
