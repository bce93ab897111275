"""Options: a pipeline's options class may set its own defaults without changing another's."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

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
