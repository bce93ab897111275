#!/usr/bin/env bash
# Builds Beam's Prism runner at the pinned Beam version into $KAPPAFLOW_CACHE/prism/<version>/prism.
# Idempotent: returns at once when the binary exists. Cold: about 2 minutes and ~850 MB of memory.
source "$(dirname "$0")/common.sh"
DEST="$KAPPAFLOW_CACHE/prism/$BEAM_VERSION"
if [ -x "$DEST/prism" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "setup-prism: Go is required to build Prism (apt-get install golang or see go.dev)" >&2; exit 1; }
mkdir -p "$DEST"
echo "setup-prism: building prism v$BEAM_VERSION (one time, ~2 min)"
# The module proxy serves modules but not every checksum-database lookup; the Beam module is
# pinned by its version tag and its own go.sum pins every dependency.
GONOSUMDB=github.com/apache/beam GOPATH="$KAPPAFLOW_CACHE/go" GOBIN="$DEST.tmp" GOFLAGS=-modcacherw \
  go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_VERSION"
mv "$DEST.tmp/prism" "$DEST/prism"
rmdir "$DEST.tmp"
echo "setup-prism: $DEST/prism"
