"""Normalize measured values to one canonical unit per quantity; an unknown unit is a dead letter.

A conversion is linear, `(value + offset) * scale`, which covers every unit here (°F → °C is
`(F - 32) * 5/9`). Unit names are matched case-insensitively.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.records import DEAD_LETTER_TAG, dead_letter

__all__ = ["UnitRule", "STANDARD_UNITS", "NormalizeUnits", "NormalizeUnitFn"]


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
        quantity_field: Optional[str], pipeline: str, id_field: Optional[str],
    ) -> None:
        self._units = dict(units)
        self._value_field = value_field
        self._unit_field = unit_field
        self._quantity_field = quantity_field
        self._quantities = {rule.quantity for rule in self._units.values()}
        self._pipeline = pipeline
        self._id_field = id_field
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
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(
            self._pipeline, "units", reason, event,
            event_id=event.get(self._id_field) if self._id_field else None,
        ))


class NormalizeUnits(beam.PTransform):
    """Events → (events with `value_field` in its quantity's canonical unit, dead letters).

    With `quantity_field` (e.g. device_type), a unit of another known quantity is rejected too.
    """

    def __init__(
        self, pipeline: str, id_field: Optional[str] = None, units: Mapping[str, UnitRule] = STANDARD_UNITS,
        value_field: str = "value", unit_field: str = "unit", quantity_field: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._fn = NormalizeUnitFn(units, value_field, unit_field, quantity_field, pipeline, id_field)

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "Normalize" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="events")
