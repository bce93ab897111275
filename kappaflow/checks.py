"""Checks of a run's configuration before anything runs: every option is the pipeline's own, the
input is there, and the reference database has the tables and columns the pipeline looks up. Each
failure is a ConfigurationError whose one-line message names the option and the fix."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import apache_beam as beam
import sqlalchemy as sa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor

from io_connectors.dead_letter_sink import WriteDeadLetters
from io_connectors.files import expand_pattern
from io_connectors.kafka import KafkaReadConfig, is_kafka_url
from kappaflow.core.records import DEAD_LETTER_TAG
from kappaflow.core.retry import brief_error
from kappaflow.core.sql import create_engine, safe_url
from kappaflow.errors import ConfigurationError
from transforms.enrich_database import LookupSpec

__all__ = ["check_own_options", "check_input", "check_reference_db", "check_dead_letters_reach_a_sink"]


def check_own_options(pipeline: str, options_class: type[PipelineOptions], argv: Sequence[str]) -> None:
    """A flag that another kappaflow pipeline declares and `pipeline` does not → ConfigurationError
    naming both. Beam parses every options class it has seen in every run, so it would take such a
    flag (--reference_db on CDC) and the run would silently ignore it."""
    from kappaflow.flex_template import flags_of, options_class as options_of, pipeline_names

    own = flags_of(options_class)
    for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
        if flag in own:
            continue
        owners = [name for name in pipeline_names() if name != pipeline and flag in flags_of(options_of(name))]
        if owners:
            raise ConfigurationError(f"{flag} is not an option of {pipeline} but of {' and '.join(owners)}; "
                                     f"kappaflow {pipeline} --help lists its options")


def check_input(pattern: Optional[str]) -> None:
    """Local files must exist now; remote globs (gs://...) are matched by the job, BigQuery by its preflight.
    A kafka:// URL is no glob: its commas separate servers and topics, not patterns, so it is only
    checked for its form here (the preflight dials the brokers)."""
    if not pattern or pattern.startswith("bigquery:"):
        return
    if is_kafka_url(pattern):
        try:
            KafkaReadConfig(pattern)
        except ValueError as err:
            raise ConfigurationError(str(err)) from None
        return
    local = [p.strip() for p in pattern.split(",") if p.strip() and "://" not in p]
    if not local:
        return
    try:
        expand_pattern(",".join(local))
    except FileNotFoundError as err:
        raise ConfigurationError(f"--input: {err}; check the path (and quote a glob so the shell leaves it "
                                 "to kappaflow)") from None
    except ValueError as err:
        raise ConfigurationError(f"--input: {err}") from None


def _sqlite_path(url: str) -> Optional[str]:
    parsed = sa.engine.make_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "",
                                                                                                ":memory:") else None


def check_reference_db(url: str, lookups: Sequence[LookupSpec]) -> None:
    """The database answers and has every looked-up table with its key and copied columns."""
    try:
        path = _sqlite_path(url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(f"--reference_db: {url!r} is not a database URL; give one like "
                                 "sqlite:///reference.db or postgresql://user@host/db") from None
    if path is not None and not os.path.exists(path):
        # SQLite would create an empty file and every lookup would fail at run time.
        raise ConfigurationError(f"--reference_db: {path} does not exist; point it at your reference "
                                 f"database (tables {', '.join(sorted({l.table for l in lookups}))})")
    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        present = set(inspector.get_table_names())
        for table in sorted({l.table for l in lookups}):
            needed = {c for l in lookups if l.table == table for c in (l.key_column, *l.columns)}
            if table not in present:
                raise ConfigurationError(
                    f"--reference_db: {safe_url(url)} has no {table} table (needed columns: "
                    f"{', '.join(sorted(needed))}); load it, or point --reference_db at the database that has it")
            columns = {c["name"] for c in inspector.get_columns(table)}
            missing = needed - columns
            if missing:
                raise ConfigurationError(
                    f"--reference_db: table {table} in {safe_url(url)} lacks column(s) "
                    f"{', '.join(sorted(missing))}; add them (the pipeline looks them up)")
    except sa.exc.SQLAlchemyError as err:
        reason = brief_error(getattr(err, "orig", None) or err, limit=200)
        raise ConfigurationError(f"--reference_db: {safe_url(url)} is not reachable ({reason}); start the "
                                 "server or fix the URL") from None
    finally:
        engine.dispose()


def check_dead_letters_reach_a_sink(pipeline: beam.Pipeline) -> None:
    """Every step that declares a dead-letter output must hand it to WriteDeadLetters, directly or
    through Flattens (a composite joining its steps' rejections); DeadLetters.collect does. Beam
    drops an output nobody reads, and rejections taken elsewhere by hand are as lost: either
    stops the run."""
    declared: list[tuple[str, Any]] = []
    flattened_into: dict[int, list[int]] = {}  # PCollection → the Flattens' outputs that take it
    written: set[int] = set()  # the PCollections read inside a WriteDeadLetters

    class FindDeadLetterOutputs(PipelineVisitor):
        inside_sink = 0

        def enter_composite_transform(self, node: Any) -> None:
            # ParDo(...).with_outputs(DEAD_LETTER_TAG, ...) keeps its tags on this composite;
            # a tag's PCollection exists only once the pipeline code asked for it.
            if DEAD_LETTER_TAG in (getattr(node.transform, "_tags", None) or ()):
                declared.append((node.full_label, node.outputs.get(DEAD_LETTER_TAG)))
            self.inside_sink += isinstance(node.transform, WriteDeadLetters)

        def leave_composite_transform(self, node: Any) -> None:
            self.inside_sink -= isinstance(node.transform, WriteDeadLetters)

        def visit_transform(self, node: Any) -> None:
            for pcoll in node.inputs:
                if self.inside_sink:
                    written.add(id(pcoll))
                if isinstance(node.transform, beam.Flatten):
                    flattened_into.setdefault(id(pcoll), []).extend(id(out) for out in node.outputs.values())

    def reaches_the_sink(pcoll: Any) -> bool:
        pending, seen = [id(pcoll)], set()
        while pending:
            current = pending.pop()
            if current in written:
                return True
            if current not in seen:
                seen.add(current)
                pending.extend(flattened_into.get(current, ()))
        return False

    pipeline.visit(FindDeadLetterOutputs())
    lost = [label for label, pcoll in declared if pcoll is None or not reaches_the_sink(pcoll)]
    if lost:
        raise ConfigurationError(f"{lost[0]}: its dead letters go nowhere; hand the step's outputs to the "
                                 "pipeline's DeadLetters (rejected.collect(...)), which writes them")
