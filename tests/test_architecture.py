"""The import contract (.importlinter): layers core -> transforms -> io_connectors -> runtime ->
pipelines, no cycles, run by `make test` (and so by CI)."""

from __future__ import annotations

import ast
import configparser
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import kappaflow

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kappaflow", "transforms", "io_connectors", "pipelines")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo", ".importlinter"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_the_import_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_kappaflow_module_has_a_layer():
    """A new module of kappaflow/ must be placed in a layer, or the contract would not see it."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    named = config["importlinter:contract:layers"]["layers"].replace(":", " ").split()
    modules = {f"kappaflow.{m.name}" for m in pkgutil.iter_modules(kappaflow.__path__)}
    assert modules - set(named) == set()


def test_an_upward_import_breaks_the_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    with open(tmp_path / "kappaflow" / "core" / "schema.py", "a") as schema:
        schema.write("\nfrom io_connectors import sinks  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "kappaflow.core is not allowed to import io_connectors" in result.stdout


# What "reads the pipeline options or looks at the runner" looks like in code (issue 12, item 5).
_OPTION_READS = {"view_as", "options", "_options", "runner", "get_all_options"}


def option_reads(root: Path, packages: tuple[str, ...]) -> list[str]:
    """file:line of each import of Beam's options module and each attribute access that reads
    pipeline options or the runner, under `packages` of `root`."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                imported = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                            else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                if (any(m.startswith("apache_beam.options") for m in imported)
                        or isinstance(node, ast.Attribute) and node.attr in _OPTION_READS):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_transform_or_connector_reads_pipeline_options_or_the_runner():
    """Runner-specific choices are made once, in the runtime (kappaflow/wiring.py), and reach the
    connectors as plain config values."""
    assert option_reads(ROOT, ("transforms", "io_connectors")) == []


def test_reading_the_runner_inside_a_transform_is_found(tmp_path):
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "fires.py").write_text(
        "from apache_beam.options.pipeline_options import StandardOptions\n\n"
        "def expand(pcoll):\n"
        "    return pcoll.pipeline.options.view_as(StandardOptions).runner\n")
    assert option_reads(tmp_path, ("transforms",)) == ["transforms/fires.py:1", "transforms/fires.py:4",
                                                      "transforms/fires.py:4", "transforms/fires.py:4"]
