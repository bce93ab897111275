#!/usr/bin/env bash
# Sets up Beam's Java expansion service and Java SDK workers for cross-language transforms (Kafka,
# GCP IO), in $KAPPAFLOW_CACHE/expansion-service/<beam>/lib/*.jar: one classpath for both
# ExpansionService and ExternalWorkerService (kappaflow/java_services.py starts them).
# Idempotent: returns at once when it is there. Cold: ~240 jars from Maven.
source "$(dirname "$0")/common.sh"
DIR="$KAPPAFLOW_CACHE/expansion-service/$BEAM_VERSION"

[ -f "$DIR/.complete" ] && exit 0
command -v mvn >/dev/null || { echo "setup-expansion-service: Maven is required (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "setup-expansion-service: Java 11+ is required (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
echo "setup-expansion-service: assembling the Java expansion service classpath (beam $BEAM_VERSION, kafka-clients $KAFKA_VERSION)"
rm -rf "$DIR" && mkdir -p "$DIR"
cp "$REPO/scripts/expansion-service/pom.xml" "$DIR/pom.xml"
(cd "$DIR" && mvn -q -B -Dbeam.version="$BEAM_VERSION" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
ls "$DIR"/lib/beam-sdks-java-expansion-service-"$BEAM_VERSION".jar "$DIR"/lib/beam-sdks-java-io-kafka-"$BEAM_VERSION".jar >/dev/null
touch "$DIR/.complete"
