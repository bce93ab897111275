"""Parse and validate raw records against a schema; every failure becomes a dead letter."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from typing import Any, Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.records import DEAD_LETTER_TAG, RawRecord, dead_letter, payload_text
from transforms.schema import Schema, ValidationError

__all__ = ["ParseEvents", "ParseEventFn", "PiiHasher"]

# IPv4 and (loosely) IPv6 literals: redacted from payloads we could not even decode.
# Candidates for IP literals in payloads we could not decode; `ipaddress` decides, so "::1" and
# "2001:db8::1" are caught while a time such as "08:00:00" is not.
_IP_CANDIDATE = re.compile(r"(?<![\w.:])[0-9A-Fa-f.:]*[.:][0-9A-Fa-f.:]*[.:][0-9A-Fa-f.:]*(?![\w.:])")


class PiiHasher:
    """Salted HMAC-SHA256 of PII values: joinable across runs with the same salt, not reversible."""

    def __init__(self, salt: str) -> None:
        self._key = salt.encode("utf-8")

    def __call__(self, value: str) -> str:
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


class ParseEventFn(beam.DoFn):
    """RawRecord → validated event dict; anything wrong → dead letter naming record and field."""

    def __init__(self, schema: Schema, pipeline: str, id_field: Optional[str], pii_salt: str) -> None:
        self._schema = schema
        self._pipeline = pipeline
        self._id_field = id_field
        self._pii_salt = pii_salt
        self._pii_paths = schema.pii_paths()
        self._read = Metrics.counter(metrics.NAMESPACE, metrics.READ)
        self._invalid = Metrics.counter(metrics.NAMESPACE, metrics.INVALID)

    def setup(self) -> None:
        self._hash = PiiHasher(self._pii_salt)

    def process(self, record: RawRecord) -> Iterable[Any]:
        self._read.inc()
        event, letter = self._parse(record)
        if letter is None:
            yield event
        else:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)

    def _parse(self, record: RawRecord) -> tuple[Optional[dict], Optional[dict]]:
        """(event, None) or (None, dead letter)."""
        payload = record.payload
        try:
            decoded = _decode(payload)
        except ValueError as err:
            return None, dead_letter(self._pipeline, "parse", str(err), _redact_text(payload), record.origin)
        try:
            event = self._schema.parse(decoded, self._hash)
        except ValidationError as err:
            event_id = decoded.get(self._id_field) if self._id_field and isinstance(decoded, dict) else None
            return None, dead_letter(
                self._pipeline,
                "parse",
                f"field {err.field}: {err.reason}",
                _redact_text(payload_text(self._redact(decoded))),
                record.origin,
                event_id=event_id if isinstance(event_id, str) else None,
            )
        if record.ingest_time is not None:
            event["_ingest_time"] = record.ingest_time
        return event, None

    def _redact(self, decoded: Any) -> Any:
        if not isinstance(decoded, dict) or not self._pii_paths:
            return decoded
        redacted = json.loads(json.dumps(decoded, default=str))
        for path in self._pii_paths:
            node = redacted
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and path[-1] in node:
                node[path[-1]] = self._hash(str(node[path[-1]]))
        return redacted


def _decode(payload: Any) -> Any:
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"payload is not UTF-8: {err}") from None
    try:
        return json.loads(payload)
    except json.JSONDecodeError as err:
        raise ValueError(f"bad JSON: {err}") from None


def _redact_text(payload: Any) -> str:
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else str(payload)
    return _IP_CANDIDATE.sub(_redact_if_ip, text)


def _redact_if_ip(match: re.Match) -> str:
    try:
        ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)
    return "<redacted>"


class ParseEvents(beam.PTransform):
    """RawRecords → (events, dead_letters), validated against `schema`."""

    def __init__(
        self, schema: Schema, pipeline: str, id_field: Optional[str] = None, pii_salt: str = ""
    ) -> None:
        super().__init__()
        self._fn = ParseEventFn(schema, pipeline, id_field, pii_salt)

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "Parse" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="events")
