#!/usr/bin/env bash
# Instructions per event, from valgrind --tool=callgrind: the figures that hold still on a
# noisy machine (bench/README.md, "Instructions per event"). For each scenario, two
# daemons under callgrind: one that only gets the scenario's connections (the baseline),
# one that gets its events too; (Ir - baseline Ir) / events is the daemon's user-space cost
# of an event, its share of connecting excluded and its eventual free() included (frames
# are freed at shutdown here, at eviction in a long-running daemon). Then the functions
# that cost the most per event (self cost, the event run minus nothing: the baseline is
# small). The kernel's share (the socket writes) is not counted by callgrind: perf is for
# that.
#
# Usage: scripts/callgrind.sh [SCENARIO...]   (s1 s4 s5 s7; default all)
# Env: AGENTCAST_BIN (build/agentcastd), AGENTCAST_BENCH (build/bench),
#      CALLGRIND_DIR (bench/results/callgrind): callgrind.out.* files and summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${AGENTCAST_BIN:-build/agentcastd}
LOADGEN=${AGENTCAST_BENCH:-build/bench}/loadgen
OUT=${CALLGRIND_DIR:-bench/results/callgrind}
TOP=${CALLGRIND_TOP:-12}

for tool in valgrind callgrind_annotate; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "callgrind: $tool is required (apt-get install valgrind)" >&2
        exit 2
    fi
done
if [ ! -x "$BIN" ] || [ ! -x "$LOADGEN" ]; then
    echo "callgrind: build first (make all): $BIN, $LOADGEN" >&2
    exit 2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$TMP"' EXIT

# scenario NAME: the loadgen flags of the event run, and of its baseline (same users and
# connections, no events). Smaller than bench.sh's: callgrind runs the daemon ~50x slower.
flags() {
    case "$1" in
    s1) echo "--users 2000 --events 40000 --via agent --batch 100 --window 10" ;;
    s4) echo "--users 500 --conns-per-user 3 --events 20000 --via agent --batch 100 --window 10" ;;
    s5) echo "--users 1000 --stream-runs 200 --chunks 200 --chunk-bytes 40 --chunk-burst 10 --via agent --batch 100 --window 10" ;;
    s7) echo "--users 1000 --events 40000 --via http --publishers 16 --batch 100 --window 1" ;;
    *) return 1 ;;
    esac
}
baseline_flags() {
    case "$1" in
    s1) echo "--users 2000 --idle" ;;
    s4) echo "--users 500 --conns-per-user 3 --idle" ;;
    s5 | s7) echo "--users 1000 --idle" ;;
    esac
}

# run NAME TAG FLAGS...: one daemon under callgrind, one loadgen run against it; prints
# the loadgen's JSON line.
run() {
    local name=$1 tag=$2 log=$TMP/$1-$2.log port pid _
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.$name-$tag" \
        "$BIN" --listen 127.0.0.1:0 --auth=none --max-conns-per-user 3 2>"$log" &
    pid=$!
    port=
    for _ in $(seq 1 300); do
        port=$(sed -n 's/.*event=listening addr=[0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -n1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "callgrind: $name: the daemon did not start" >&2
        cat "$log" >&2
        return 1
    fi
    "$LOADGEN" --port "$port" --pid "$pid" "$@" --timeout 600 --quiet | tail -n1 >"$TMP/$name-$tag.json"
    kill -TERM "$pid"
    wait "$pid"
}

total() {
    callgrind_annotate "$1" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(s1 s4 s5 s7)
: >"$OUT/summary.txt"
for name in "${scenarios[@]}"; do
    f=$(flags "$name") || {
        echo "callgrind: unknown scenario $name" >&2
        exit 2
    }
    read -r -a fa <<<"$f"
    read -r -a ba <<<"$(baseline_flags "$name")"
    echo "callgrind: $name: baseline" >&2
    run "$name" base "${ba[@]}"
    echo "callgrind: $name: loadgen $f" >&2
    run "$name" events "${fa[@]}"
    events=$(sed -n 's/.*"accepted":\([0-9]*\).*/\1/p' "$TMP/$name-events.json")
    deliveries=$(sed -n 's/.*"deliveries":\([0-9]*\).*/\1/p' "$TMP/$name-events.json")
    base=$(total "$OUT/callgrind.out.$name-base")
    ev=$(total "$OUT/callgrind.out.$name-events")
    {
        echo "== $name: loadgen $f"
        awk -v b="$base" -v e="$ev" -v n="$events" -v d="$deliveries" 'BEGIN {
            printf "events %d, deliveries %d; Ir %.0f - baseline %.0f = %.0f per event, %.0f per delivery\n",
                n, d, e, b, (e - b) / n, (e - b) / d }'
        echo "top functions (self cost, the baseline's subtracted), instructions per event:"
        for tag in base events; do
            callgrind_annotate "$OUT/callgrind.out.$name-$tag" 2>/dev/null |
                awk '/file:function/ { if (!done) on = 1; next }
                    on && /^ *$/ { on = 0; done = 1; next }
                    on && /^-+$/ { next }
                    on && /^ *[0-9,]+ / { ir = $1; gsub(",", "", ir); fn = $0;
                        sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", fn); sub(/ *\[.*/, "", fn);
                        sub(/^\.\/.*\/[^\/:]*:/, "libc:", fn); print ir "\t" fn }' >"$TMP/$tag.fn"
        done
        awk -F'\t' -v n="$events" 'FNR == NR { base[$2] += $1; next }
            { ev[$2] += $1 }
            END { for (f in ev) printf "%.0f\t%s\n", (ev[f] - base[f]) / n, f }' \
            "$TMP/base.fn" "$TMP/events.fn" | sort -rn | head -n "$TOP" |
            awk -F'\t' '{ printf "  %8d  %s\n", $1, $2 }'
        echo
    } | tee -a "$OUT/summary.txt"
done
echo "callgrind: $OUT/summary.txt; callgrind_annotate $OUT/callgrind.out.<name>-events for more" >&2
