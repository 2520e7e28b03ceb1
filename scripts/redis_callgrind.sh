#!/usr/bin/env bash
# Instructions Redis spends per published event in the publish script (bench/README.md):
# redis-server under valgrind --tool=callgrind serves bench/redis_script.mjs twice, with 2,000
# and with 12,000 events; the difference of the two totals over 10,000 events leaves the
# set-up out. Instruction counts do not depend on the machine's other load.
#   scripts/redis_callgrind.sh [--script F] [--burst K] [--layout 4|10]
set -euo pipefail
cd "$(dirname "$0")/.."
REDIS_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
command -v valgrind >/dev/null || { echo "redis_callgrind: valgrind is required" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/agentcast-rcg.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# total EVENTS: Ir of one redis-server run serving EVENTS events
total() {
    local port pid out=$TMP/cg.out
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    valgrind --tool=callgrind --callgrind-out-file="$out" "$REDIS_BIN" --port "$port" \
        --bind 127.0.0.1 --save '' --appendonly no --logfile "$TMP/redis.log" \
        >"$TMP/valgrind.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        node -e "require('net').connect($port,'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))" 2>/dev/null && break
        sleep 0.2
    done
    node bench/redis_script.mjs --port "$port" --events "$1" "${ARGS[@]}" >&2
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

ARGS=("$@")
a=$(total 2000)
b=$(total 12000)
awk -v a="$a" -v b="$b" 'BEGIN { printf "{\"instructions_per_event\":%.0f}\n", (b - a) / 10000 }'
