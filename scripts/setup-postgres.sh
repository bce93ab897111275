#!/usr/bin/env bash
# PostgreSQL server binaries for the tests (a throwaway cluster is started per test session).
# Idempotent: does nothing when a PostgreSQL server is already installed.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-postgres: PostgreSQL is not installed and we are not root; install the 'postgresql' package" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends postgresql </dev/null
