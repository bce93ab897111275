#!/usr/bin/env bash
# Build the one image of all pipelines and push it to Artifact Registry.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dataflow-env.sh
docker build -f templates/Dockerfile -t "$IMAGE" .
docker push "$IMAGE"
echo "pushed $IMAGE"
