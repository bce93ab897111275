"""Normalize measured values to one canonical unit per quantity; an unknown unit is a dead letter.

A conversion is linear, `(value + offset) * scale`, which covers every unit here (°F → °C is
`(F - 32) * 5/9`). Unit names are matched case-insensitively.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, Rejection

__all__ = ["UnitRule", "STANDARD_UNITS", "NormalizeUnits", "NormalizeUnitFn", "PlausibleRanges",
           "CheckPlausibleRanges", "CheckPlausibleRangeFn"]


@dataclasses.dataclass(frozen=True)
class UnitRule:
    canonical: str
    quantity: str
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale == 0:
            raise ValueError(f"unit rule to {self.canonical}: scale must not be 0")

    def convert(self, value: float) -> float:
        return value if (self.offset, self.scale) == (0.0, 1.0) else (value + self.offset) * self.scale


_CELSIUS = UnitRule("celsius", "temperature")
_FAHRENHEIT = UnitRule("celsius", "temperature", offset=-32.0, scale=5 / 9)
_KELVIN = UnitRule("celsius", "temperature", offset=-273.15)
_HPA = UnitRule("hPa", "pressure")
_PERCENT = UnitRule("percent", "humidity")

STANDARD_UNITS: Mapping[str, UnitRule] = {
    **dict.fromkeys(("celsius", "c", "°c", "degc"), _CELSIUS),
    **dict.fromkeys(("fahrenheit", "f", "°f", "degf"), _FAHRENHEIT),
    **dict.fromkeys(("kelvin", "k"), _KELVIN),
    **dict.fromkeys(("hpa", "mbar"), _HPA),
    "pa": UnitRule("hPa", "pressure", scale=0.01),
    "kpa": UnitRule("hPa", "pressure", scale=10.0),
    "bar": UnitRule("hPa", "pressure", scale=1000.0),
    **dict.fromkeys(("percent", "%", "%rh"), _PERCENT),
}


class NormalizeUnitFn(beam.DoFn):
    def __init__(
        self, units: Mapping[str, UnitRule], value_field: str, unit_field: str,
        quantity_field: Optional[str],
    ) -> None:
        self._units = dict(units)
        self._value_field = value_field
        self._unit_field = unit_field
        self._quantity_field = quantity_field
        self._quantities = {rule.quantity for rule in self._units.values()}
        self._invalid = Metrics.counter(metrics.NAMESPACE, metrics.INVALID)

    def process(self, event: dict) -> Iterator[Any]:
        unit = event.get(self._unit_field)
        rule = self._units.get(unit.strip().lower()) if isinstance(unit, str) else None
        quantity = event.get(self._quantity_field) if self._quantity_field else None
        if rule is None:
            yield self._reject(event, f"field {self._unit_field}: unknown unit {unit!r}")
        elif quantity in self._quantities and quantity != rule.quantity:
            yield self._reject(event, f"field {self._unit_field}: {unit!r} is not a unit of {quantity}")
        else:
            value = event.get(self._value_field)
            yield {**event, self._value_field: None if value is None else rule.convert(value),
                   self._unit_field: rule.canonical}

    def _reject(self, event: dict, reason: str) -> beam.pvalue.TaggedOutput:
        self._invalid.inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection("units", reason, event))


class NormalizeUnits(beam.PTransform):
    """Events → (events with `value_field` in its quantity's canonical unit, dead letters).

    With `quantity_field` (e.g. device_type), a unit of another known quantity is rejected too.
    """

    def __init__(
        self, units: Mapping[str, UnitRule] = STANDARD_UNITS,
        value_field: str = "value", unit_field: str = "unit", quantity_field: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._fn = NormalizeUnitFn(units, value_field, unit_field, quantity_field)

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "Normalize" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="events")


# Physically possible and wider than any industrial sensor, in canonical units: absolute zero to
# beyond a type B thermocouple (1820 °C); vacuum to 1000 bar of hydraulics; 0-100 % humidity.
# A reading outside is a broken sensor or payload (1e308 °C), never a reason for an alert.
DEFAULT_RANGES: tuple[tuple[str, float, float], ...] = (
    ("temperature", -273.15, 2000.0),
    ("pressure", 0.0, 1_000_000.0),
    ("humidity", 0.0, 100.0),
)


@dataclasses.dataclass(frozen=True)
class PlausibleRanges:
    """Valid value range per quantity, in the quantity's canonical unit, bounds included."""

    ranges: tuple[tuple[str, float, float], ...] = DEFAULT_RANGES

    def __post_init__(self) -> None:
        for quantity, low, high in self.ranges:
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"--valid_ranges: {quantity} needs finite bounds, low < high; got {low}..{high}")
        if len({q for q, _, _ in self.ranges}) != len(self.ranges):
            raise ValueError("--valid_ranges: a quantity is given twice")

    @classmethod
    def parse(cls, text: Optional[str]) -> "PlausibleRanges":
        """`temperature=-40..125,humidity=0..100`: the quantities given replace their defaults."""
        ranges = {q: (low, high) for q, low, high in DEFAULT_RANGES}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            quantity, sep, bounds = item.partition("=")
            low, dots, high = bounds.partition("..")
            try:
                if not (sep and dots):
                    raise ValueError
                ranges[quantity.strip()] = (float(low), float(high))
            except ValueError:
                raise ValueError(f"--valid_ranges: {item!r} is not quantity=low..high") from None
        return cls(tuple((q, low, high) for q, (low, high) in ranges.items()))

    def problem(self, quantity: str, value: float) -> Optional[str]:
        for name, low, high in self.ranges:
            if name == quantity:
                return None if low <= value <= high else f"outside the plausible {quantity} range {low:g}..{high:g}"
        return None


class CheckPlausibleRangeFn(beam.DoFn):
    """Event with a canonical value → itself, or a dead letter (stage `range`) when the value is
    outside its quantity's plausible range. The quantity comes from the canonical unit."""

    def __init__(self, ranges: PlausibleRanges, units: Mapping[str, UnitRule], value_field: str,
                 unit_field: str) -> None:
        self._ranges = ranges
        self._quantity_of = {rule.canonical: rule.quantity for rule in units.values()}
        self._value_field = value_field
        self._unit_field = unit_field
        self._invalid = Metrics.counter(metrics.NAMESPACE, metrics.INVALID)

    def process(self, event: dict) -> Iterator[Any]:
        value, unit = event.get(self._value_field), event.get(self._unit_field)
        quantity = self._quantity_of.get(unit)
        problem = None if value is None or quantity is None else self._ranges.problem(quantity, value)
        if problem is None:
            yield event
        else:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection(
                "range", f"field {self._value_field}: {value:g} {unit} is {problem} (--valid_ranges)", event))


class CheckPlausibleRanges(beam.PTransform):
    """Events in canonical units (after NormalizeUnits) → (plausible events, dead letters)."""

    def __init__(
        self, ranges: PlausibleRanges,
        units: Mapping[str, UnitRule] = STANDARD_UNITS, value_field: str = "value", unit_field: str = "unit",
    ) -> None:
        super().__init__()
        self._fn = CheckPlausibleRangeFn(ranges, units, value_field, unit_field)

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "Check" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="events")
