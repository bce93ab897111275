#!/usr/bin/env bash
# The Pub/Sub emulator the tests start (a Java server from the Google Cloud SDK) and the Java
# runtime it needs. Idempotent: does nothing when both are there.
set -euo pipefail
JAR_GLOB=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar
have_jar() { ls $JAR_GLOB >/dev/null 2>&1; }
if have_jar && command -v java >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-pubsub-emulator: need root to install the emulator and Java" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
command -v java >/dev/null 2>&1 || apt-get install -y -q --no-install-recommends default-jre-headless </dev/null
# The emulator is packaged in the Google Cloud SDK's apt repository, where that is configured.
have_jar || apt-get install -y -q google-cloud-cli-pubsub-emulator </dev/null || true
if ! have_jar; then
    echo "setup-pubsub-emulator: no Pub/Sub emulator at $JAR_GLOB; install the Google Cloud SDK's" \
         "google-cloud-cli-pubsub-emulator package" >&2
    exit 1
fi
