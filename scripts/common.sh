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

# assemble_classpath WHAT DIR POM [-Dproperty=value ...]: DIR/lib/*.jar = POM's runtime dependencies
# from Maven, marked complete by DIR/.complete (the callers return early when it is there).
assemble_classpath() {
  local what="$1" dir="$2" pom="$3"
  shift 3
  command -v mvn >/dev/null || { echo "$what: Maven is required (apt-get install maven)" >&2; exit 1; }
  command -v java >/dev/null || { echo "$what: Java 11+ is required (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$pom" "$dir/pom.xml"
  (cd "$dir" && mvn -q -B "$@" dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
}
