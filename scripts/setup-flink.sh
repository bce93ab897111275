#!/usr/bin/env bash
# Sets up everything the Flink runs need, in $KAPPAFLOW_CACHE/flink:
#   job-server-<beam>/lib/*.jar   classpath of Beam's Flink job server (embedded Flink: --flink_master=[local])
#   dist-<flink>/                 a Flink distribution for the local standalone cluster (scripts/flink-cluster.sh)
# Idempotent: returns at once when both are there. Cold: ~160 MB of jars from Maven, ~250 MB from PyPI.
source "$(dirname "$0")/common.sh"
FLINK_DIR="$KAPPAFLOW_CACHE/flink"
JOB_SERVER="$FLINK_DIR/job-server-$BEAM_VERSION"
DIST="$FLINK_DIR/dist-$FLINK_VERSION"
# Beam publishes no beam-runners-java-job-service at 2.70.0; see scripts/flink/pom.xml.
JOB_SERVER_SERVICE_VERSION=2.65.0
PIP="${PYTHON:-python3} -m pip"

if [ ! -f "$JOB_SERVER/.complete" ]; then
  command -v mvn >/dev/null || { echo "setup-flink: Maven is required (apt-get install maven)" >&2; exit 1; }
  command -v java >/dev/null || { echo "setup-flink: Java 11+ is required (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
  echo "setup-flink: assembling the Flink job server classpath (beam $BEAM_VERSION, flink $FLINK_MINOR)"
  rm -rf "$JOB_SERVER" && mkdir -p "$JOB_SERVER"
  cp "$REPO/scripts/flink/pom.xml" "$JOB_SERVER/pom.xml"
  (cd "$JOB_SERVER" && mvn -q -B -Dbeam.version="$BEAM_VERSION" -Dflink.minor="$FLINK_MINOR" \
      -Djob.service.version="$JOB_SERVER_SERVICE_VERSION" \
      dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
  ls "$JOB_SERVER"/lib/beam-runners-flink-"$FLINK_MINOR"-"$BEAM_VERSION".jar >/dev/null
  touch "$JOB_SERVER/.complete"
fi

if [ ! -f "$DIST/.complete" ]; then
  echo "setup-flink: unpacking Flink $FLINK_VERSION (apache-flink + apache-flink-libraries from PyPI)"
  rm -rf "$DIST" "$DIST.tmp" && mkdir -p "$DIST.tmp"
  # Not installed into any virtualenv: they only carry the distribution (bin/, lib/, conf/).
  $PIP download --quiet --no-deps --no-binary=apache-flink-libraries --dest "$DIST.tmp" \
      "apache-flink-libraries==$FLINK_VERSION"
  $PIP download --quiet --no-deps --only-binary=:all: --python-version 3.11 --dest "$DIST.tmp" \
      "apache-flink==$FLINK_VERSION"
  (cd "$DIST.tmp" && tar xzf apache?flink?libraries-*.tar.gz && python3 -m zipfile -e apache_flink-*.whl wheel)
  # The sdist carries lib/ and bin/bash-java-utils.jar, the wheel the bin/ scripts and conf/.
  LIBS="$(echo "$DIST.tmp"/apache-flink-libraries-*/deps)"
  mkdir -p "$DIST"
  cp -r "$LIBS/lib" "$DIST.tmp/wheel/pyflink/bin" "$DIST.tmp/wheel/pyflink/conf" "$DIST/"
  cp "$LIBS/bin/bash-java-utils.jar" "$DIST/bin/"
  chmod +x "$DIST"/bin/*
  rm -rf "$DIST.tmp"
  touch "$DIST/.complete"
fi
