"""Deterministic IoT sample: sensor readings with every case the pipeline handles, plus the
reference database (`devices` registry) it enriches from.

    python -m kappaflow.samples.iot --readings 20000 --out readings.jsonl --reference_db sqlite:///ref.db

- devices of three types; most are in the registry, the others carry their location in the message;
- temperatures in celsius, fahrenheit or kelvin (per device), some readings with an unknown unit;
- some quality != good; exact re-deliveries (duplicates); network delays (out-of-order arrival),
  a few long enough for late panes but within the allowed lateness;
- gateway devices whose records carry a top-level `ingest_time` (epoch ms): some of them have a
  skewed clock (minutes to days off), and a few readings have no timestamp at all;
- temperature spikes above the device's threshold; a few malformed records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Iterator

import sqlalchemy as sa

from kappaflow.samples import Arrivals, SampleCommand

START = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.timezone.utc).timestamp()
FACILITIES = ("plant-a", "plant-b", "plant-c")
MODELS = ("TX-100", "TX-200", "PX-7", "HX-3")
TEMPERATURE_UNITS = (("celsius", 0.6), ("fahrenheit", 0.25), ("kelvin", 0.15))
DEFAULT_MAX_TEMP_C = 90.0


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    readings: int = 20_000
    seed: int = 7
    devices: int = 40  # the readings go round them in turn
    readings_per_second: float = 20.0
    registered_share: float = 0.8  # the others are missing from `devices`
    gateway_share: float = 0.4  # devices whose records carry an ingest time
    skewed_share: float = 0.25  # of the gateway devices: clocks minutes to days off
    missing_timestamp_share: float = 0.01  # of gateway readings
    unknown_unit_share: float = 0.003
    bad_quality_share: float = 0.03
    duplicate_share: float = 0.02
    malformed_share: float = 0.003
    spike_share: float = 0.01  # temperature readings above the device's threshold
    late_share: float = 0.005  # delivered 65-105 s late: late panes, within 60 s lateness
    mean_delay_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.readings < 1 or self.devices < 1 or self.readings_per_second <= 0:
            raise ValueError("invalid sample configuration")


@dataclasses.dataclass(frozen=True)
class Device:
    device_id: str
    device_type: str
    unit: str
    facility: str
    line: str
    zone: str
    registered: bool
    gateway: bool
    clock_offset: float
    max_temp_c: float


def devices(config: SampleConfig) -> list[Device]:
    rng = random.Random(config.seed)
    out = []
    for i in range(config.devices):
        device_type = ("temperature", "temperature", "pressure", "humidity")[i % 4]
        unit = {"pressure": rng.choice(("hPa", "kPa")), "humidity": "percent"}.get(device_type)
        if unit is None:
            roll, unit = rng.random(), TEMPERATURE_UNITS[-1][0]
            for name, share in TEMPERATURE_UNITS:
                roll -= share
                if roll < 0:
                    unit = name
                    break
        registered = rng.random() < config.registered_share
        gateway = rng.random() < config.gateway_share
        skewed = gateway and rng.random() < config.skewed_share
        offset = rng.choice((-1, 1)) * rng.uniform(600, 2 * 86400) if skewed else rng.uniform(-2, 2)
        out.append(Device(
            device_id=f"dev-{i:04d}", device_type=device_type, unit=unit,
            facility=rng.choice(FACILITIES), line=f"line-{rng.randrange(1, 5)}", zone=f"z{rng.randrange(1, 9)}",
            registered=registered, gateway=gateway, clock_offset=offset,
            max_temp_c=rng.choice((70.0, 80.0, 85.0)) if registered else DEFAULT_MAX_TEMP_C,
        ))
    return out


def _measure(rng: random.Random, device: Device, config: SampleConfig) -> float:
    """A plausible value in the device's own unit."""
    if device.device_type == "temperature":
        celsius = rng.gauss(45, 8)
        if rng.random() < config.spike_share:
            celsius = device.max_temp_c + rng.uniform(1, 20)
        return {"celsius": celsius, "fahrenheit": celsius * 9 / 5 + 32, "kelvin": celsius + 273.15}[device.unit]
    if device.device_type == "pressure":
        hpa = rng.gauss(1013, 15)
        return hpa / 10 if device.unit == "kPa" else hpa
    return min(100.0, max(0.0, rng.gauss(50, 12)))


def _timestamp(rng: random.Random, seconds: float) -> object:
    """Epoch ms mostly, ISO-8601 (Z or an offset) otherwise."""
    form = rng.random()
    if form < 0.7:
        return int(round(seconds * 1000))
    moment = dt.datetime.fromtimestamp(round(seconds, 3), dt.timezone.utc)
    if form < 0.9:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat(timespec="milliseconds")


def _reading(rng: random.Random, device: Device, config: SampleConfig, seconds: float, arrival: float) -> dict:
    record: dict = {
        "device_id": device.device_id,
        "device_type": device.device_type,
        "timestamp": _timestamp(rng, seconds + device.clock_offset),
        "value": round(_measure(rng, device, config), 3),
        "unit": device.unit,
        "location": {"facility": device.facility, "line": device.line, "zone": device.zone},
        "quality": "good" if rng.random() >= config.bad_quality_share else rng.choice(("bad", "uncertain")),
        "battery_voltage": round(rng.uniform(2.7, 3.6), 2),
    }
    if rng.random() < config.unknown_unit_share:
        record["unit"] = rng.choice(("rankine", "mV", "furlongs"))
    if device.gateway:
        record["ingest_time"] = int(round(arrival * 1000))
        if rng.random() < config.missing_timestamp_share:
            del record["timestamp"]
    return record


def _malformed(rng: random.Random, record: dict) -> str:
    kind = rng.randrange(4)
    broken = json.loads(json.dumps(record))
    if kind == 0:
        return json.dumps(record)[: rng.randrange(10, 50)]
    if kind == 1:
        del broken["device_id"]
    elif kind == 2:
        broken["value"] = "n/a"
    else:
        broken["timestamp"] = "2026-03-02 06:00:00"  # no UTC offset
    return json.dumps(broken)


def generate(config: SampleConfig) -> Iterator[str]:
    """JSON lines in arrival order."""
    rng = random.Random(config.seed + 1)
    fleet = devices(config)
    arrivals = Arrivals(rng, config.duplicate_share, redelivery_seconds=20)  # re-deliveries of a message
    for index in range(config.readings):
        device = fleet[index % len(fleet)]
        seconds = START + index / config.readings_per_second + rng.uniform(0, 1 / config.readings_per_second)
        delay = rng.expovariate(1 / config.mean_delay_seconds)
        if rng.random() < config.late_share:
            delay = rng.uniform(65, 105)
        record = _reading(rng, device, config, seconds, seconds + delay)
        line = _malformed(rng, record) if rng.random() < config.malformed_share else json.dumps(record)
        arrivals.add(seconds + delay, index, line)
    yield from arrivals.in_order()


def build_reference_db(url: str, config: SampleConfig) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "devices", meta, sa.Column("device_id", sa.Text, primary_key=True), sa.Column("facility", sa.Text),
        sa.Column("line", sa.Text), sa.Column("zone", sa.Text), sa.Column("model", sa.Text),
        sa.Column("max_temp_c", sa.Float),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    rng = random.Random(config.seed + 2)
    rows = [
        # The registry knows better than the message: registered devices get another zone.
        {"device_id": d.device_id, "facility": d.facility, "line": d.line, "zone": f"{d.zone}-reg",
         "model": rng.choice(MODELS), "max_temp_c": d.max_temp_c}
        for d in devices(config) if d.registered
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    engine.dispose()


SAMPLE = SampleCommand(__doc__, SampleConfig, "readings", generate, build_reference_db, "the devices registry")
write_sample = SAMPLE.write


if __name__ == "__main__":
    SAMPLE.main()
