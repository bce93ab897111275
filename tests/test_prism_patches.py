"""The fixes scripts/setup-prism.sh applies to Prism's source before it builds the project's Prism.
Each fix's Go test runs on that patched source, where it passes. A fix of wrong results is also
tested on the same source with the stock file laid over it, where its test must fail: a canary that
says when a Beam upgrade has fixed the defect upstream and the patch can go; so is 0004 (a scheduler
that spun). 0002 and 0003 remove costs without a behaviour to tell stock Prism by: 0002's test checks
that the patch keeps Prism's order, 0003 (a progress loop that spun) has no Go test; their figures
are `make bench` with `--runners prism` and docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kappaflow import prism
from kappaflow.runner_cache import BEAM_VERSION, cache_dir

pytestmark = pytest.mark.slow

JOBSERVICES = "go/pkg/beam/runners/prism/internal/jobservices"
ENGINE = "go/pkg/beam/runners/prism/internal/engine"


def _go_test(name: str, tmp_path: Path, stock_files: tuple[str, ...] = (),
             package: str = JOBSERVICES) -> subprocess.CompletedProcess:
    source = Path(prism.binary()).parent / "src"  # the patched module, kept by setup-prism.sh
    env = {**os.environ, "GOPATH": os.path.join(cache_dir(), "go"), "GOFLAGS": "-modcacherw",
           "GONOSUMDB": "github.com/apache/beam"}
    command = ["go", "test", "-count=1", "-run", name, f"./{package}"]
    if stock_files:
        module = json.loads(subprocess.run(["go", "mod", "download", "-json", "github.com/apache/beam/sdks/v2@"
                                            f"v{BEAM_VERSION}"], env=env, capture_output=True, text=True,
                                           check=True).stdout)["Dir"]
        overlay = tmp_path / "overlay.json"
        overlay.write_text(json.dumps({"Replace": {str(source / package / f): str(Path(module) / package / f)
                                                   for f in stock_files}}))
        command.insert(3, f"-overlay={overlay}")
    return subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, timeout=600)


def test_prism_keeps_every_bundles_counters_reported_before_their_metadata(tmp_path):
    """0001-metrics-keep-every-unresolved-payload.patch: two bundles report a counter under a short
    ID Prism cannot resolve yet; stock Prism keeps only the second one's value."""
    name = "TestUnresolvedShortIDKeepsEveryBundle"
    patched = _go_test(name, tmp_path)
    assert patched.returncode == 0, patched.stdout + patched.stderr
    stock = _go_test(name, tmp_path, stock_files=("metrics.go",))
    assert stock.returncode != 0 and "want one counter of 7" in stock.stdout, (
        "stock Prism no longer loses these counter updates: drop the patch\n" + stock.stdout + stock.stderr)


def test_prism_adds_pending_elements_without_rebuilding_the_heap_each_time(tmp_path):
    """0002-engine-push-small-pending-batches.patch: batches smaller than a stage's backlog are
    pushed onto its heap, larger ones rebuild it; either way elements leave in timestamp order."""
    result = _go_test("TestAddPendingKeepsEveryElementInTimestampOrder", tmp_path, package=ENGINE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prism_does_not_reschedule_a_stateful_stage_whose_keys_are_all_busy(tmp_path):
    """0004-engine-no-reschedule-while-every-key-is-busy.patch: with every pending key in a running
    bundle, building a bundle asks for no reschedule (stock Prism asked, and its scheduler spun)."""
    name = "TestStatefulStageWithEveryKeyInProgressAsksNoReschedule"
    patched = _go_test(name, tmp_path, package=ENGINE)
    assert patched.returncode == 0, patched.stdout + patched.stderr
    stock = _go_test(name, tmp_path, stock_files=("elementmanager.go",), package=ENGINE)
    assert stock.returncode != 0 and "asked for a reschedule" in stock.stdout, (
        "stock Prism no longer reschedules a stage whose keys are all busy: drop the patch\n"
        + stock.stdout + stock.stderr)
