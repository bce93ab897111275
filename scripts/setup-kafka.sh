#!/usr/bin/env bash
# Sets up a single-node KRaft Kafka broker (the kafka_2.13 jar and its dependencies, no
# distribution tarball) in $KAPPAFLOW_CACHE/kafka/<version>/lib; scripts/kafka.sh starts and stops it.
# Idempotent: returns at once when it is there. Cold: ~55 jars (~25 MB) from Maven.
source "$(dirname "$0")/common.sh"
DIR="$KAPPAFLOW_CACHE/kafka/$KAFKA_VERSION"

[ -f "$DIR/.complete" ] && exit 0
echo "setup-kafka: assembling the Kafka $KAFKA_VERSION broker classpath"
assemble_classpath setup-kafka "$DIR" "$REPO/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION"
ls "$DIR"/lib/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
touch "$DIR/.complete"
