"""Names of the counters that make up a run's accounting; the launcher reads them back."""

from typing import NamedTuple

NAMESPACE = "kappaflow"

READ = "records_read"
INVALID = "records_invalid"
DUPLICATES = "duplicates"
TOO_LATE = "too_late"
ENRICH_FAILED = "enrich_failed"
EXCLUDED = "records_excluded"  # kept out of statistics on purpose (e.g. quality != good)
AGGREGATED = "records_aggregated"
ROWS_WRITTEN = "rows_written"
ROWS_REJECTED_BY_SINK = "rows_rejected_by_sink"  # not a category: the sink's dead letters count them
SINK_RETRIES = "sink_retries"
DEAD_LETTERS_WRITTEN = "dead_letters_written"
# Dead letters the dead-letter table itself refused: they are lost, so the accounting fails.
DEAD_LETTERS_FAILED = "dead_letters_failed"
CLOCK_CORRECTED = "clock_skew_corrected"  # not a category: corrected records go on
ALERTS_RAISED = "alerts_raised"
ALERTS_WRITTEN = "alerts_written"
# A gauge, not a category: the newest event time stamped (epoch seconds), for progress lines.
EVENT_TIME_POSITION = "event_time_position"
# Gauges, one per replayed file (`replay_watermark:<path>`): the watermark the replay source gave
# that file at its last checkpoint (newest event time minus the bound, epoch seconds), FILE_DONE
# once the file is read. The source's watermark is their minimum (io_connectors/replay.py).
SOURCE_WATERMARK_PREFIX = "replay_watermark:"
FILE_DONE = 2**62

# Change data capture: a change either becomes a row's state, or loses to a newer change of the
# same row, or is refused by the target table (type conflict, rejected by the database).
APPLIED = "changes_applied"
SUPERSEDED = "changes_superseded"
REJECTED = "changes_rejected"


class Outcome(NamedTuple):
    counter: str  # the counter that counts it
    ends_in: str  # "table" (an output), "dead" (a dead letter) or "dropped" (on purpose)


# Every place a record read can end, by its name in the accounting (kappaflow/launcher.Accounting).
# A pipeline declares the ones it has (its options class's OUTCOMES); the accounting balances
# exactly those, and a record counted in any other is a hole in the accounting.
OUTCOMES: dict[str, Outcome] = {
    "invalid": Outcome(INVALID, "dead"),
    "duplicates": Outcome(DUPLICATES, "dropped"),
    "too_late": Outcome(TOO_LATE, "dead"),
    "enrich_failed": Outcome(ENRICH_FAILED, "dead"),
    "excluded": Outcome(EXCLUDED, "dropped"),
    "aggregated": Outcome(AGGREGATED, "table"),
    "applied": Outcome(APPLIED, "table"),
    "superseded": Outcome(SUPERSEDED, "dropped"),
    "rejected": Outcome(REJECTED, "dead"),
}
