#!/usr/bin/env bash
# Benchmarks agentcastd with build/bench/loadgen: (a) idle memory per connection, (b) 10k users
# fan-out, (c) 1k users x 3 connections. One fresh daemon per scenario; prints each loadgen JSON
# line and appends it to bench/results/<date>/raw.jsonl. BENCH_QUICK=1 shortens (b) and (c).
# `scripts/bench.sh smoke` is the few-second correctness run of `make test` (saves nothing).
# Not a test of recovery, auth or TLS. Env: AGENTCAST_BIN, AGENTCAST_BENCH, BENCH_SERVER_ARGS,
# BENCH_RESULTS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${AGENTCAST_BIN:-build/agentcastd}
LOADGEN=${AGENTCAST_BENCH:-build/bench}/loadgen
MODE=${1:-full}
QUICK=${BENCH_QUICK:-0}

for f in "$BIN" "$LOADGEN"; do
    if [ ! -x "$f" ]; then
        echo "bench: $f not built (make all)" >&2
        exit 2
    fi
done
case "$MODE" in full | smoke) ;; *)
    echo "usage: scripts/bench.sh [smoke]" >&2
    exit 2
    ;;
esac

# 10k connections need 10k descriptors in the daemon and in the loadgen.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SRV_PIN=()
LG_PIN=()
if [ "$MODE" = full ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    SRV_PIN=(taskset -c 0)
    LG_PIN=(taskset -c 1)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/agentcast-bench.XXXXXX")
SRV_PID=
SRV_PORT=
SRV_LOG=

stop_server() {
    [ -n "$SRV_PID" ] || return 0
    local pid=$SRV_PID rc=0
    SRV_PID=
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" || rc=$?
        echo "bench: daemon had already exited (status $rc); log tail:" >&2
        tail -n 20 "$SRV_LOG" >&2
        return 1
    fi
    kill -TERM "$pid"
    # --shutdown-timeout defaults to 10 s; give it a little more before insisting
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: daemon ignored SIGTERM for 12 s; killing it" >&2
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "bench: daemon exited with status $rc after SIGTERM; log tail:" >&2
        tail -n 20 "$SRV_LOG" >&2
        return 1
    fi
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    stop_server || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# start_server NAME: starts the daemon on a free port; sets SRV_PID, SRV_PORT, SRV_LOG.
start_server() {
    SRV_LOG=$TMP/$1.log
    # exec in a subshell: $! must be the daemon itself (its /proc is what loadgen reads), not a
    # shell that forked it
    # shellcheck disable=SC2086 # BENCH_SERVER_ARGS is a list of flags
    (exec "${SRV_PIN[@]}" "$BIN" --listen 127.0.0.1:0 --auth=none --max-conns-per-user 3 \
        ${BENCH_SERVER_ARGS:-} 2>"$SRV_LOG") &
    SRV_PID=$!
    SRV_PORT=
    for _ in $(seq 1 100); do
        SRV_PORT=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$SRV_LOG" |
            head -n 1)
        if [ -n "$SRV_PORT" ]; then
            if [ "$(readlink -f "/proc/$SRV_PID/exe")" != "$(readlink -f "$BIN")" ]; then
                echo "bench: pid $SRV_PID is not $BIN" >&2
                stop_server || true
                return 1
            fi
            return 0
        fi
        if ! kill -0 "$SRV_PID" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "bench: daemon did not report event=listening; log:" >&2
    cat "$SRV_LOG" >&2
    stop_server || true
    return 1
}

# scenario NAME [loadgen flags...]: one fresh daemon, one loadgen run; prints the JSON line.
failed=0
scenario() {
    local name=$1 out rc=0 quiet=()
    shift
    [ "$MODE" = smoke ] && quiet=(--quiet)
    start_server "$name" || {
        failed=1
        return 0
    }
    echo "bench: $name: loadgen --port $SRV_PORT --pid $SRV_PID $*" >&2
    out=$("${LG_PIN[@]}" "$LOADGEN" --port "$SRV_PORT" --pid "$SRV_PID" --label "$name" \
        "${quiet[@]}" "$@") || rc=$?
    [ -n "$out" ] && echo "$out"
    if [ -n "$out" ] && [ -n "${RESULTS:-}" ]; then
        echo "$out" >>"$RESULTS"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "bench: $name: loadgen exited $rc; daemon log tail:" >&2
        tail -n 20 "$SRV_LOG" >&2
        failed=1
    fi
    stop_server || failed=1
}

if [ "$MODE" = smoke ]; then
    scenario smoke --users 50 --conns-per-user 2 --events 500 --batch 100 --timeout 20
    exit $failed
fi

if [ "$QUICK" = 1 ]; then
    EV_B=100000
    EV_C=30000
    TIMEOUT=120
else
    EV_B=1000000
    EV_C=300000
    TIMEOUT=300
fi
RESULTS_DIR=${BENCH_RESULTS_DIR:-bench/results/$(date +%F)}
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/raw.jsonl

scenario idle-10k --users 10000 --conns-per-user 1 --idle --timeout "$TIMEOUT"
scenario fanout-10k --users 10000 --conns-per-user 1 --events "$EV_B" --batch 100 \
    --timeout "$TIMEOUT"
scenario multi-1kx3 --users 1000 --conns-per-user 3 --events "$EV_C" --batch 100 \
    --timeout "$TIMEOUT"

echo "bench: results appended to $RESULTS" >&2
exit $failed
