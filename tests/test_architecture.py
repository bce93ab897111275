"""The import contract (.importlinter): layers core -> transforms -> io_connectors -> runtime ->
pipelines, no cycles, run by `make test` (and so by CI)."""

from __future__ import annotations

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
