# Shared by the set-up scripts: one cache directory, one Beam version (read from requirements.txt,
# so the Prism binary and the Flink runner always match the pinned SDK).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAPPAFLOW_CACHE="${KAPPAFLOW_CACHE:-$REPO/.cache}"
BEAM_VERSION="$(sed -n 's/^apache-beam\(\[[a-z,]*\]\)\?==\([0-9.]*\)$/\2/p' "$REPO/requirements.txt")"
# Beam's Flink runner is built per Flink minor version; the cluster must run the same one.
FLINK_MINOR=1.19
FLINK_VERSION=1.19.3
# The Kafka broker of the tests and the client library of the Java expansion service.
KAFKA_VERSION=3.9.1
[ -n "$BEAM_VERSION" ] || { echo "cannot read the apache-beam pin from requirements.txt" >&2; exit 1; }
mkdir -p "$KAPPAFLOW_CACHE"
