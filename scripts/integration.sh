#!/usr/bin/env bash
# Runs the integration tests (tests/integration/*.test.mjs, node:test) against the real
# daemon: $AGENTCAST_BIN, default build/agentcastd. Files run one at a time; each test has
# a 60 s cap and the whole run 600 s. Exits non-zero when any test fails.
# AGENTCAST_THREADS=N runs every daemon the tests start with --threads N (the harness passes
# it on; `make test` runs the suites at 1 and at 4).
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENTCAST_BIN="${AGENTCAST_BIN:-$PWD/build/agentcastd}"
if [ ! -x "$AGENTCAST_BIN" ]; then
    echo "integration: no daemon at $AGENTCAST_BIN (run make first)" >&2
    exit 1
fi
if ! command -v node >/dev/null 2>&1; then
    echo "integration: node is required (scripts/deps.sh)" >&2
    exit 1
fi
if [ ! -d tests/node_modules/ws ]; then
    echo "integration: npm ci (tests/)" >&2
    (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi

# Many sockets per test: raise the soft fd limit to the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

shopt -s nullglob
# The daemon's suites, then the JavaScript client's (clients/js/test) against the same daemon.
# Then the pages in headless Chromium (tests/browser; screenshots in tests/artifacts/).
files=(tests/integration/*.test.mjs clients/js/test/*.test.mjs tests/browser/*.test.mjs)
if [ ${#files[@]} -eq 0 ]; then
    echo "integration: no test files in tests/integration/" >&2
    exit 1
fi

echo "integration: $AGENTCAST_BIN, ${#files[@]} files, fd limit $(ulimit -n)" >&2
# make valgrind runs the daemon 20-50x slower: it raises both limits.
exec timeout --kill-after=10 "${INTEGRATION_SUITE_TIMEOUT:-600}" node --test --test-reporter=spec \
    --test-concurrency=1 --test-timeout="${INTEGRATION_TEST_TIMEOUT_MS:-60000}" "${files[@]}"
