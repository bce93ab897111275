#!/usr/bin/env bash
# One flex-template spec per pipeline, all on the same image; the spec's env picks the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dataflow-env.sh
for metadata in templates/*/metadata.json; do
  pipeline="$(basename "$(dirname "$metadata")")"
  gcloud dataflow flex-template build "${TEMPLATES}/${pipeline}.json" \
    --project="$PROJECT" \
    --image="$IMAGE" \
    --sdk-language=PYTHON \
    --metadata-file="$metadata" \
    --env="FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/${pipeline}.py"
  echo "built ${TEMPLATES}/${pipeline}.json"
done
