"""Options: a pipeline's options class may set its own defaults without changing another's, and
each numeric option has one rule that the command line and the template regex share."""

from __future__ import annotations

import argparse
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from kappaflow.flex_template import options_class, pipeline_names
from kappaflow.options import (OPTION_GROUPS, POSITIVE, KafkaOptions, KappaflowOptions, Option, declared_options,
                               option_rules)
from pipelines.clickstream import ClickstreamOptions
from pipelines.iot_sensors import IotSensorsOptions
from conftest import registered_actions


def test_pipeline_defaults_do_not_leak():
    # Both classes are registered in this process, in whatever order the imports happened.
    iot = PipelineOptions(["--input=x"]).view_as(IotSensorsOptions)
    click = PipelineOptions(["--input=x"]).view_as(ClickstreamOptions)
    iot_windows, click_windows = iot.window_config(), click.window_config()
    assert (iot_windows.size_seconds, iot_windows.allowed_lateness_seconds, iot.max_clock_skew_seconds) == (
        10.0, 60.0, 300.0)
    assert (click_windows.size_seconds, click_windows.allowed_lateness_seconds) == (60.0, 900.0)
    given = PipelineOptions(["--window_seconds=5", "--archive=/a"]).view_as(IotSensorsOptions)
    assert (given.window_config().size_seconds, given.archive, given.early_firing_seconds) == (5.0, "/a", 30.0)


def test_iot_flags_are_known_to_beams_own_parser():
    # Otherwise Beam warns "Unparseable argument" for them when the pipeline runs.
    everything = PipelineOptions(["--ingest_time_field=t", "--max_clock_skew_seconds=9"]).get_all_options()
    assert (everything["ingest_time_field"], everything["max_clock_skew_seconds"]) == ("t", 9.0)


@pytest.mark.parametrize("name", pipeline_names())
def test_the_command_line_check_and_the_template_regex_of_an_option_agree(name):
    """One rule per option (its `rule` in kappaflow/options.py): what the regex lets through, the check
    accepts, and the other way round."""
    cls = options_class(name)
    types = {a.dest: a.type for a in registered_actions(cls)}
    for dest, rule in option_rules(cls).items():
        samples = ["0", "1", "500", "007", "-5"] if types[dest] is int else \
            ["0", "0.0", "0.5", "1", "60", "60.5", "007", "-1", "1e3"]
        for text in samples:
            assert bool(re.fullmatch(rule.regex, text)) == (_number(text) and rule.accepts(float(text))), (dest, text)


def _number(text: str) -> bool:
    return re.fullmatch(r"-?[0-9.]+", text) is not None  # what a template parameter can pass as a number


def test_dedup_horizon_zero_is_refused_by_every_check():
    """Once the template regex let 0 through and DedupConfig refused it at run time."""
    from transforms.dedup import DedupConfig

    rule = option_rules(options_class("clickstream"))["dedup_horizon_seconds"]
    assert not re.fullmatch(rule.regex, "0") and not rule.accepts(0.0)
    with pytest.raises(ValueError):
        DedupConfig(0.0, 60.0)


@pytest.mark.parametrize("group", [KappaflowOptions, *OPTION_GROUPS, KafkaOptions], ids=lambda g: g.__name__)
def test_a_group_registers_with_beam_exactly_the_options_of_its_table(group):
    """Beam's parser, --help, the checks and the templates read one table: a flag added to the
    parser by hand would be parsed by Beam and unknown to the others."""
    parser = argparse.ArgumentParser(add_help=False)
    group._add_argparse_args(parser)
    registered = [(a.dest, a.type, a.default, a.choices, a.help) for a in parser._actions]
    assert registered == [(o.name, None if o.type is str else o.type, o.current_default(), o.choices, o.help)
                          for o in group.OPTIONS]


def test_a_default_from_the_environment_is_read_when_the_options_are_parsed(monkeypatch):
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9050")
    assert PipelineOptions([]).view_as(KappaflowOptions).bigquery_endpoint == "127.0.0.1:9050"
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST")
    assert PipelineOptions([]).view_as(KappaflowOptions).bigquery_endpoint is None


def test_an_option_is_refused_outside_a_help_group_or_with_a_rule_on_text():
    with pytest.raises(ValueError, match="group 'misc'"):
        Option("x", float, 1.0, POSITIVE, group="misc", help="")
    with pytest.raises(ValueError, match="a rule bounds a number"):
        Option("x", str, None, POSITIVE, group="input", help="")


def test_choices_are_the_template_regex_of_an_option_that_has_them():
    method = next(o for o in declared_options(KappaflowOptions) if o.name == "bigquery_method")
    regex = method.template_regex()
    assert [c for c in ("AUTO", "FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API", "auto", "LOADS")
            if re.fullmatch(regex, c)] == list(method.choices)
