"""Names of the counters that make up a run's accounting; the launcher reads them back."""

NAMESPACE = "kappaflow"

READ = "records_read"
INVALID = "records_invalid"
DUPLICATES = "duplicates"
TOO_LATE = "too_late"
ENRICH_FAILED = "enrich_failed"
AGGREGATED = "records_aggregated"
ROWS_WRITTEN = "rows_written"
DEAD_LETTERS_WRITTEN = "dead_letters_written"
