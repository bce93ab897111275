#!/usr/bin/env bash
# Launch a flex template with example parameters:
#   scripts/run-template.sh streaming  PIPELINE   # Pub/Sub subscription -> BigQuery, Streaming Engine
#   scripts/run-template.sh backfill   PIPELINE   # Cloud Storage files  -> BigQuery, batch
# Override SUBSCRIPTION, INPUT, DATASET, REFERENCE_DB as needed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dataflow-env.sh
mode="${1:?streaming or backfill}"
pipeline="${2:-clickstream}"
: "${DATASET:=kappaflow}"
: "${REFERENCE_DB:?set REFERENCE_DB to an SQLAlchemy URL the workers can reach (e.g. Cloud SQL)}"
common=(
  --project="$PROJECT" --region="$REGION"
  --template-file-gcs-location="${TEMPLATES}/${pipeline}.json"
  --temp-location="gs://${BUCKET}/tmp"
  --staging-location="gs://${BUCKET}/staging"
  --additional-experiments=use_runner_v2
)
case "$mode" in
  streaming)
    : "${SUBSCRIPTION:=projects/${PROJECT}/subscriptions/${pipeline}}"
    gcloud dataflow flex-template run "${pipeline}-$(date +%Y%m%d-%H%M%S)" "${common[@]}" \
      --enable-streaming-engine \
      --parameters="streaming=true,input_subscription=${SUBSCRIPTION},output=bigquery:${PROJECT}.${DATASET},reference_db=${REFERENCE_DB},sdk_container_image=${IMAGE}"
    ;;
  backfill)
    : "${INPUT:=gs://${BUCKET}/history/${pipeline}/*.jsonl.gz}"
    gcloud dataflow flex-template run "${pipeline}-backfill-$(date +%Y%m%d-%H%M%S)" "${common[@]}" \
      --parameters="input=${INPUT},output=bigquery:${PROJECT}.${DATASET},reference_db=${REFERENCE_DB},sdk_container_image=${IMAGE}"
    ;;
  *) echo "usage: $0 streaming|backfill [PIPELINE]" >&2; exit 2 ;;
esac
