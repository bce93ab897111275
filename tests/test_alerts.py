"""RaiseThresholdAlerts: one alert id per (device, window), whatever the pane; severity; filters."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.alerts import RaiseThresholdAlerts, ThresholdAlertConfig

T = 1772431200.0
CONFIG = ThresholdAlertConfig(("device_id",), applies=lambda r: r["device_type"] == "temperature")


def stats(device, mx, threshold, start=T, device_type="temperature", pane=0):
    return {"device_id": device, "device_type": device_type, "window_start": start, "window_end": start + 10,
            "max": mx, "threshold": threshold, "pane_index": pane}


def test_alerts(run_batch, count_of):
    rows = [
        stats("d1", 91.0, 90.0),                        # warning
        stats("d1", 101.0, 90.0, pane=1),               # a later pane of the same window: same id
        stats("d1", 95.0, 90.0, start=T + 10),          # the next window
        stats("d2", 90.0, 90.0),                        # equal: no alert
        stats("d3", 85.0, None),                        # no threshold known
        stats("d4", 2000.0, 90.0, device_type="pressure"),
    ]

    def build(p):
        alerts = p | beam.Create(rows) | RaiseThresholdAlerts(CONFIG)
        assert_that(alerts | beam.Map(lambda a: (a["alert_id"], a["device_id"], a["max"], a["threshold"],
                                                 a["severity"], a["window_end"] - a["window_start"])),
                    equal_to([("d1/2026-03-02T06:00:00.000000Z", "d1", 91.0, 90.0, "warning", 10),
                              ("d1/2026-03-02T06:00:00.000000Z", "d1", 101.0, 90.0, "critical", 10),
                              ("d1/2026-03-02T06:00:10.000000Z", "d1", 95.0, 90.0, "warning", 10)]))

    assert count_of(run_batch(build), "alerts_raised") == 3


def test_config_is_validated():
    with pytest.raises(ValueError):
        ThresholdAlertConfig(())
    with pytest.raises(ValueError):
        ThresholdAlertConfig(("d",), critical_excess=-1)
