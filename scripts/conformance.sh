#!/usr/bin/env bash
# Runs the RFC 6455 conformance suite (tests/conformance/run.mjs: raw sockets, node:net only)
# against the real daemon: $AGENTCAST_BIN, default build/agentcastd. One line per case, then
# "N passed, M failed". The whole run is capped at 120 s. Exits non-zero when any case fails.
# AGENTCAST_THREADS=N runs the daemon with --threads N (its environment is passed on).
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENTCAST_BIN="${AGENTCAST_BIN:-$PWD/build/agentcastd}"
if [ ! -x "$AGENTCAST_BIN" ]; then
    echo "conformance: no daemon at $AGENTCAST_BIN (run make first)" >&2
    exit 1
fi
if ! command -v node >/dev/null 2>&1; then
    echo "conformance: node is required (scripts/deps.sh)" >&2
    exit 1
fi

echo "conformance: $AGENTCAST_BIN" >&2
exec timeout --kill-after=10 120 node tests/conformance/run.mjs
