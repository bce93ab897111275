#!/usr/bin/env bash
# Builds Beam's Prism runner at the pinned Beam version into $KAPPAFLOW_CACHE/prism/<version>/prism,
# from the Go module's source with kappaflow's fixes in scripts/prism-patches/ applied (each patch
# says what it fixes and how it is tested; those Go tests run before the build).
# Idempotent: returns at once when the binary was built from the current patches. Cold: about
# 3 minutes and ~850 MB of memory.
source "$(dirname "$0")/common.sh"
DEST="$KAPPAFLOW_CACHE/prism/$BEAM_VERSION"
PATCHES="$REPO/scripts/prism-patches"
STAMP="$(cat "$PATCHES"/* | sha256sum | cut -d' ' -f1)"
if [ -x "$DEST/prism" ] && [ -d "$DEST/src" ] && [ "$(cat "$DEST/patches.sha256" 2>/dev/null)" = "$STAMP" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "setup-prism: Go is required to build Prism (apt-get install golang or see go.dev)" >&2; exit 1; }
command -v patch >/dev/null || { echo "setup-prism: patch is required (apt-get install patch)" >&2; exit 1; }
echo "setup-prism: building prism v$BEAM_VERSION with $(ls "$PATCHES"/*.patch | wc -l) patch(es) (one time, ~3 min)"
# The module proxy serves modules but not every checksum-database lookup; the Beam module is
# pinned by its version tag and its own go.sum pins every dependency.
export GONOSUMDB=github.com/apache/beam GOPATH="$KAPPAFLOW_CACHE/go" GOFLAGS=-modcacherw
MODULE="github.com/apache/beam/sdks/v2@v$BEAM_VERSION"
SRC="$(go mod download -json "$MODULE" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$SRC" ] || { echo "setup-prism: could not download $MODULE" >&2; exit 1; }
# The patched source stays next to the binary: tests/test_prism_patches.py runs its Go tests there.
WORK="$DEST/src"
rm -rf "$WORK" && mkdir -p "$DEST" && cp -r "$SRC" "$WORK" && chmod -R u+w "$WORK"
for p in "$PATCHES"/*.patch; do
  patch -s -p1 -d "$WORK" < "$p" || { echo "setup-prism: $(basename "$p") does not apply to $MODULE" >&2; exit 1; }
done
cp "$PATCHES"/*_test.go "$WORK/go/pkg/beam/runners/prism/internal/jobservices/"
(cd "$WORK" && go test -count=1 ./go/pkg/beam/runners/prism/internal/jobservices >/dev/null) \
  || { echo "setup-prism: Prism's jobservices tests fail with the patches (cd $WORK && go test ./go/pkg/beam/runners/prism/internal/jobservices)" >&2; exit 1; }
# Only the engine patches' own tests: the package's full suite takes ~2 minutes (it passes with them).
ENGINE_TESTS='TestAddPendingKeepsEveryElementInTimestampOrder|TestStatefulStageWithEveryKeyInProgressAsksNoReschedule'
(cd "$WORK" && go test -count=1 -run "$ENGINE_TESTS" ./go/pkg/beam/runners/prism/internal/engine >/dev/null) \
  || { echo "setup-prism: an engine patch's test fails (cd $WORK && go test -run '$ENGINE_TESTS' ./go/pkg/beam/runners/prism/internal/engine)" >&2; exit 1; }
(cd "$WORK" && go build -o "$DEST/prism.tmp" ./go/cmd/prism)
mv "$DEST/prism.tmp" "$DEST/prism"
echo "$STAMP" > "$DEST/patches.sha256"
echo "setup-prism: $DEST/prism"
