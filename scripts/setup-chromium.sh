#!/usr/bin/env bash
# Debian's Chromium, for the test that renders a run report headless (tests/test_report_html.py).
# Idempotent: does nothing when a chromium binary is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-chromium: Chromium is not installed and we are not root; install the 'chromium' package" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium </dev/null
