"""The sample generators' shared command line (kappaflow/samples SampleCommand)."""

from __future__ import annotations

import sqlite3

import pytest

from kappaflow.samples import clickstream, iot


@pytest.mark.parametrize("module, count, table", [(clickstream, "events", "users"), (iot, "readings", "devices")])
def test_a_sample_command_writes_the_sample_its_config_describes_and_the_reference_db(
        module, count, table, tmp_path, capsys):
    out, ref = tmp_path / "sample.jsonl", tmp_path / "ref.db"
    module.SAMPLE.main([f"--{count}", "300", "--seed", "3", f"--out={out}", f"--reference_db=sqlite:///{ref}"])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == list(module.generate(module.SampleConfig(**{count: 300, "seed": 3})))
    assert lines != list(module.generate(module.SampleConfig(**{count: 300})))  # the seed was used
    printed = capsys.readouterr().out
    assert f"wrote {len(lines):,} lines (300 {count}) to {out}" in printed
    assert f"in sqlite:///{ref}" in printed
    with sqlite3.connect(ref) as db:
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
