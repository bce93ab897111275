"""Options: a pipeline's options class may set its own defaults without changing another's, and
each numeric option has one rule that the command line and the template regex share."""

from __future__ import annotations

import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from kappaflow.flex_template import _actions, options_class, pipeline_names
from kappaflow.options import option_rules
from pipelines.clickstream import ClickstreamOptions
from pipelines.iot_sensors import IotSensorsOptions


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
    """One rule per option (kappaflow/options.py RULES): what the regex lets through, the check
    accepts, and the other way round."""
    cls = options_class(name)
    types = {a.dest: a.type for a in _actions(cls)}
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
