#!/usr/bin/env bash
# PostgreSQL server binaries for the tests (a throwaway cluster is started per test session).
# Idempotent: does nothing when a PostgreSQL server is already installed.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install setup-postgres postgresql
