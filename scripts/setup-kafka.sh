#!/usr/bin/env bash
# Sets up a single-node KRaft Kafka broker (the kafka_2.13 jar and its dependencies, no
# distribution tarball) in $KAPPAFLOW_CACHE/kafka/<version>/lib; scripts/kafka.sh starts and stops it.
# Idempotent: returns at once when it is there. Cold: ~60 jars from Maven.
source "$(dirname "$0")/common.sh"
DIR="$KAPPAFLOW_CACHE/kafka/$KAFKA_VERSION"

[ -f "$DIR/.complete" ] && exit 0
command -v mvn >/dev/null || { echo "setup-kafka: Maven is required (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "setup-kafka: Java 11+ is required (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
echo "setup-kafka: assembling the Kafka $KAFKA_VERSION broker classpath"
rm -rf "$DIR" && mkdir -p "$DIR"
cp "$REPO/scripts/kafka/pom.xml" "$DIR/pom.xml"
(cd "$DIR" && mvn -q -B -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
ls "$DIR"/lib/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
touch "$DIR/.complete"
