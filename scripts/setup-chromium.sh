#!/usr/bin/env bash
# Debian's Chromium, for the test that renders a run report headless (tests/test_report_html.py).
# Idempotent: does nothing when a chromium binary is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install setup-chromium chromium
