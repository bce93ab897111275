#!/usr/bin/env bash
# Sets up Beam's Java expansion service and Java SDK workers for cross-language transforms (Kafka,
# GCP IO), in $KAPPAFLOW_CACHE/expansion-service/<beam>/lib/*.jar: one classpath for both
# ExpansionService and ExternalWorkerService (kappaflow/java_services.py starts them).
# Idempotent: returns at once when it is there. Cold: ~240 jars (~175 MB) from Maven.
source "$(dirname "$0")/common.sh"
DIR="$KAPPAFLOW_CACHE/expansion-service/$BEAM_VERSION"

[ -f "$DIR/.complete" ] && exit 0
echo "setup-expansion-service: assembling the Java expansion service classpath (beam $BEAM_VERSION, kafka-clients $KAFKA_VERSION)"
assemble_classpath setup-expansion-service "$DIR" "$REPO/scripts/expansion-service/pom.xml" \
    -Dbeam.version="$BEAM_VERSION" -Dkafka.version="$KAFKA_VERSION"
ls "$DIR"/lib/beam-sdks-java-expansion-service-"$BEAM_VERSION".jar "$DIR"/lib/beam-sdks-java-io-kafka-"$BEAM_VERSION".jar >/dev/null
touch "$DIR/.complete"
