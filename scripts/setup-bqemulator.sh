#!/usr/bin/env bash
# bqemulator (a DuckDB-backed BigQuery REST server) for the BigQuery tests, in a virtualenv of its
# own: its gRPC/protobuf pins conflict with Apache Beam's. Idempotent: quick when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/bqemulator
LOCK=scripts/bqemulator-requirements.lock
STAMP="$VENV/.installed-$(sha256sum "$LOCK" | cut -c1-16)"
if [ -f "$STAMP" ]; then
    exit 0
fi
rm -rf "$VENV"
${PYTHON:-python3} -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip </dev/null
"$VENV/bin/python" -m pip install --quiet -r "$LOCK" </dev/null
touch "$STAMP"
