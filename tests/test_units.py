"""NormalizeUnits: temperatures to celsius, pressures to hPa; unknown or mismatched units dead-letter."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from kappaflow.core.records import DEAD_LETTER_TAG
from transforms.units import STANDARD_UNITS, CheckPlausibleRanges, NormalizeUnits, PlausibleRanges, UnitRule


@pytest.mark.parametrize("unit, value, expected", [
    ("celsius", 21.5, 21.5), ("Fahrenheit", 212.0, 100.0), ("°F", -40.0, -40.0), ("kelvin", 273.15, 0.0),
    ("K", 373.15, 100.0), ("kPa", 101.3, 1013.0), ("hPa", 1013.0, 1013.0), ("Pa", 101300.0, 1013.0),
    ("%", 55.0, 55.0),
])
def test_standard_units(unit, value, expected):
    assert STANDARD_UNITS[unit.lower()].convert(value) == pytest.approx(expected, abs=1e-9)


def test_rule_is_validated():
    with pytest.raises(ValueError):
        UnitRule("x", "q", scale=0)


def test_normalize_units(run_batch, count_of):
    events = [
        {"id": "c", "device_type": "temperature", "value": 20.0, "unit": "celsius"},
        {"id": "f", "device_type": "temperature", "value": 212.0, "unit": "fahrenheit"},
        {"id": "k", "device_type": "temperature", "value": 300.0, "unit": "KELVIN"},
        {"id": "p", "device_type": "pressure", "value": 100.0, "unit": "kPa"},
        {"id": "o", "device_type": "vibration", "value": 1.0, "unit": "percent"},  # unknown quantity: unit decides
        {"id": "u", "device_type": "temperature", "value": 1.0, "unit": "rankine"},
        {"id": "m", "device_type": "temperature", "value": 1.0, "unit": "hPa"},
    ]

    def build(p):
        out = p | beam.Create(events) | NormalizeUnits(quantity_field="device_type")
        assert_that(out.events | beam.Map(lambda e: (e["id"], round(e["value"], 9), e["unit"])),
                    equal_to([("c", 20.0, "celsius"), ("f", 100.0, "celsius"), ("k", 26.85, "celsius"),
                              ("p", 1000.0, "hPa"), ("o", 1.0, "percent")]), label="events")
        assert_that(out[DEAD_LETTER_TAG] | beam.Map(lambda r: (r.element["id"], r.stage, r.reason)),
                    equal_to([("u", "units", "field unit: unknown unit 'rankine'"),
                              ("m", "units", "field unit: 'hPa' is not a unit of temperature")]), label="dead")

    result = run_batch(build)
    assert count_of(result, "records_invalid") == 2


def test_plausible_ranges_parse_and_validate():
    ranges = PlausibleRanges.parse("temperature=-40..125")
    assert ("temperature", -40.0, 125.0) in ranges.ranges and ("humidity", 0.0, 100.0) in ranges.ranges
    assert ranges.problem("temperature", 125.0) is None
    assert ranges.problem("temperature", 125.5) == "outside the plausible temperature range -40..125"
    assert PlausibleRanges().problem("vibration", 1e308) is None  # no range declared: not judged
    for bad in ("temperature", "temperature=-40", "temperature=5..1", "humidity=0..inf", "x=a..b"):
        with pytest.raises(ValueError, match="--valid_ranges"):
            PlausibleRanges.parse(bad)


def test_implausible_readings_are_dead_letters_of_stage_range(run_batch, count_of):
    events = [
        {"id": "ok", "value": 21.5, "unit": "celsius"},
        {"id": "hot", "value": 1e308, "unit": "celsius"},
        {"id": "cold", "value": -300.0, "unit": "celsius"},
        {"id": "wet", "value": 100.5, "unit": "percent"},
        {"id": "inf", "value": float("inf"), "unit": "hPa"},  # 1e308 bar after conversion
        {"id": "other", "value": 1e308, "unit": "volt"},  # a unit of no known quantity: not judged here
    ]

    def build(p):
        out = p | beam.Create(events) | CheckPlausibleRanges(PlausibleRanges())
        assert_that(out.events | beam.Map(lambda e: e["id"]), equal_to(["ok", "other"]), label="events")
        assert_that(out[DEAD_LETTER_TAG] | beam.Map(lambda r: (r.element["id"], r.stage, r.reason)), equal_to([
            ("hot", "range", "field value: 1e+308 celsius is outside the plausible temperature range "
                             "-273.15..2000 (--valid_ranges)"),
            ("cold", "range", "field value: -300 celsius is outside the plausible temperature range "
                              "-273.15..2000 (--valid_ranges)"),
            ("wet", "range", "field value: 100.5 percent is outside the plausible humidity range 0..100 "
                             "(--valid_ranges)"),
            ("inf", "range", "field value: inf hPa is outside the plausible pressure range 0..1e+06 "
                             "(--valid_ranges)"),
        ]), label="dead")

    result = run_batch(build)
    assert count_of(result, "records_invalid") == 4
