#!/usr/bin/env bash
# The benchmark of bench/README.md: every scenario against agentcastd and the Node.js peer
# (bench/peers/node-ws), interleaved, BENCH_REPS repetitions (3; 1 with BENCH_QUICK=1), one
# fresh server per run pinned to CPU 0 and build/bench/loadgen pinned to CPU 1, plus
# build/bench/sendprobe (this machine's write() ceiling) once per repetition; and the
# several-node comparison: the same load on 1 agentcastd with the memory broker (memory1*)
# and on 2 agentcastd sharing a fresh redis-server (redis2*), or two Redis shards
# (redis2-shards2: --broker redis://A,redis://B), agentcast only, unpinned.
# Appends each JSON line to bench/results/<date>/raw.jsonl, then writes summary.md (medians,
# min..max, targets) and PNG charts (gnuplot) there. BENCH_QUICK=1 is a short subset.
# `scripts/bench.sh smoke` is the few-second correctness run of `make test` (saves nothing;
# with a 2-node Redis cluster too when redis-server is installed).
# Not a test of auth or TLS. Env: AGENTCAST_BIN, AGENTCAST_BENCH, BENCH_SERVER_ARGS (extra
# agentcastd flags), BENCH_RESULTS_DIR, BENCH_REPS, BENCH_PEERS ("agentcast node"),
# BENCH_ONLY (a regex of scenario names), BENCH_PERF=1 (perf record agentcastd per run),
# REDIS_SERVER_BIN (/usr/bin/redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${AGENTCAST_BIN:-build/agentcastd}
BENCH_BIN=${AGENTCAST_BENCH:-build/bench}
LOADGEN=$BENCH_BIN/loadgen
SENDPROBE=$BENCH_BIN/sendprobe
PEER_DIR=bench/peers/node-ws
REDIS_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
MODE=${1:-full}
QUICK=${BENCH_QUICK:-0}

case "$MODE" in full | smoke) ;; *)
    echo "usage: scripts/bench.sh [smoke]" >&2
    exit 2
    ;;
esac
for f in "$BIN" "$LOADGEN"; do
    if [ ! -x "$f" ]; then
        echo "bench: $f not built (make all)" >&2
        exit 2
    fi
done

# 19k connections need 19k descriptors in the server and in the loadgen.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SRV_PIN=()
LG_PIN=()
if [ "$MODE" = full ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    SRV_PIN=(taskset -c 0)
    LG_PIN=(taskset -c 1)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/agentcast-bench.XXXXXX")
# The servers of the current run: one (SRV_PID, SRV_PORT, SRV_LOG), or the nodes of a cluster
# (SRV_PIDS, SRV_LOGS, SRV_TARGETS "127.0.0.1:P,127.0.0.1:Q"; SRV_PID is the first node) and
# its redis-server (REDIS_PID, REDIS_PORT, REDIS_LOG).
SRV_PID=
SRV_PORT=
SRV_LOG=
SRV_PIDS=()
SRV_LOGS=()
SRV_TARGETS=
REDIS_PID=
REDIS_PORT=
REDIS_LOG=
# with several shards, the ones after the first (REDIS_PID is the first)
SHARD_PIDS=()
SHARD_LOGS=()
SHARD_PORTS=()
PERF_PID=

# wait_stopped PID LOG WHAT: after its SIGTERM; 1 if it ignored it for 12 s (then SIGKILL)
# or exited non-zero.
wait_stopped() {
    local pid=$1 log=$2 what=$3 rc=0
    # --shutdown-timeout defaults to 10 s; give it a little more before insisting
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: $what ignored SIGTERM for 12 s; killing it" >&2
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "bench: $what exited with status $rc after SIGTERM; log tail:" >&2
        tail -n 20 "$log" >&2
        return 1
    fi
}

# already_exited PID LOG WHAT: reports a process that exited before it was asked to.
already_exited() {
    local rc=0
    wait "$1" || rc=$?
    echo "bench: $3 had already exited (status $rc); log tail:" >&2
    tail -n 20 "$2" >&2
}

# Stops the server, or every node (side by side) and then the redis-server; 1 if any had
# exited before, ignored SIGTERM or exited non-zero.
stop_server() {
    local bad=0 i pids=("${SRV_PIDS[@]}") logs=("${SRV_LOGS[@]}") alive=()
    if [ ${#pids[@]} -eq 0 ] && [ -n "$SRV_PID" ]; then
        pids=("$SRV_PID")
        logs=("$SRV_LOG")
    fi
    SRV_PID=
    SRV_PIDS=()
    SRV_LOGS=()
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[i]}" 2>/dev/null; then
            kill -TERM "${pids[i]}"
            alive[i]=1
        else
            alive[i]=0
        fi
    done
    for i in "${!pids[@]}"; do
        local what="server"
        [ ${#pids[@]} -gt 1 ] && what="node $((i + 1)) of ${#pids[@]}"
        if [ "${alive[i]}" = 1 ]; then
            wait_stopped "${pids[i]}" "${logs[i]}" "$what" || bad=1
        else
            already_exited "${pids[i]}" "${logs[i]}" "$what"
            bad=1
        fi
    done
    if [ -n "$REDIS_PID" ]; then
        local rp=$REDIS_PID
        REDIS_PID=
        if kill -0 "$rp" 2>/dev/null; then
            kill -TERM "$rp"
            wait_stopped "$rp" "$REDIS_LOG" redis-server || bad=1
        else
            already_exited "$rp" "$REDIS_LOG" redis-server
            bad=1
        fi
    fi
    for i in "${!SHARD_PIDS[@]}"; do
        if kill -0 "${SHARD_PIDS[i]}" 2>/dev/null; then
            kill -TERM "${SHARD_PIDS[i]}"
            wait_stopped "${SHARD_PIDS[i]}" "${SHARD_LOGS[i]}" "redis-server shard $((i + 2))" ||
                bad=1
        else
            already_exited "${SHARD_PIDS[i]}" "${SHARD_LOGS[i]}" "redis-server shard $((i + 2))"
            bad=1
        fi
    done
    SHARD_PIDS=()
    SHARD_LOGS=()
    SHARD_PORTS=()
    return $bad
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
    fi
    stop_server || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# wait_listening PID LOG EXE: prints the port the server logged as event=listening, once it
# has; 1 if it exited first, did not within 10 s, or the pid is not EXE.
wait_listening() {
    local pid=$1 log=$2 exe=$3 port
    for _ in $(seq 1 100); do
        port=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
        if [ -n "$port" ]; then
            if [ "$(readlink -f "/proc/$pid/exe")" != "$(readlink -f "$exe")" ]; then
                echo "bench: pid $pid is not $exe" >&2
                return 1
            fi
            echo "$port"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: pid $pid ($exe) did not report event=listening; log:" >&2
    cat "$log" >&2
    return 1
}

# start_server NAME PEER: starts agentcastd or the Node peer on a free port; sets SRV_PID,
# SRV_PORT, SRV_LOG.
start_server() {
    local exe
    SRV_LOG=$TMP/$1-$2.log
    # exec in a subshell: $! must be the server itself (its /proc is what loadgen reads), not a
    # shell that forked it
    if [ "$2" = node ]; then
        exe=$(command -v node)
        (exec "${SRV_PIN[@]}" node "$PEER_DIR/server.mjs" --listen 127.0.0.1:0 2>"$SRV_LOG") &
    else
        exe=$BIN
        # shellcheck disable=SC2086 # BENCH_SERVER_ARGS is a list of flags
        (exec "${SRV_PIN[@]}" "$BIN" --listen 127.0.0.1:0 --auth=none --max-conns-per-user 3 \
            ${BENCH_SERVER_ARGS:-} 2>"$SRV_LOG") &
    fi
    SRV_PID=$!
    if ! SRV_PORT=$(wait_listening "$SRV_PID" "$SRV_LOG" "$exe"); then
        stop_server || true
        return 1
    fi
}

# redis_line PORT COMMAND: the first line of Redis's answer to an inline COMMAND.
redis_line() {
    local line=
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf '%s\r\n' "$2" >&3
    read -r -t 2 line <&3 || true
    exec 3<&-
    echo "${line%$'\r'}"
}

# redis_ping PORT: 0 when a Redis on 127.0.0.1:PORT answers PING with PONG.
redis_ping() {
    [ "$(redis_line "$1" PING)" = +PONG ]
}

# start_redis NAME: a fresh redis-server on a free 127.0.0.1 port, nothing persisted; sets
# REDIS_PID, REDIS_PORT, REDIS_LOG.
start_redis() {
    local port attempt
    REDIS_LOG=$TMP/$1-redis.log
    if [ ! -x "$REDIS_BIN" ]; then
        echo "bench: $REDIS_BIN not found (scripts/deps.sh installs redis-server)" >&2
        return 1
    fi
    for attempt in 1 2 3 4 5 6; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        # a port something already listens on would answer PING: not ours
        redis_ping "$port" && continue
        mkdir -p "$TMP/redis-$port"
        # shellcheck disable=SC2086 # REDIS_EXTRA is a list of flags
        (exec "$REDIS_BIN" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --dir "$TMP/redis-$port" --logfile "$REDIS_LOG" ${REDIS_EXTRA:-}) &
        REDIS_PID=$!
        for _ in $(seq 1 50); do
            if redis_ping "$port"; then
                REDIS_PORT=$port
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        # most likely a bind collision: another port
        kill -KILL "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
        echo "bench: redis-server did not start on port $port (attempt $attempt); log tail:" >&2
        tail -n 5 "$REDIS_LOG" >&2 || true
    done
    return 1
}

# start_cluster NAME NODES BROKER [SHARDS]: NODES agentcastd (unpinned) with BROKER memory
# or redis (SHARDS fresh redis-servers, 1 by default, key prefix bench:), or rcluster (a
# Redis Cluster of SHARDS masters, redis+cluster://); sets SRV_PIDS, SRV_LOGS, SRV_TARGETS,
# SRV_PID (and SHARD_* for the shards after the first).
start_cluster() {
    local name=$1 nodes=$2 broker=$3 shards=${4:-1} n pid log port bflags=() urls first
    local REDIS_EXTRA=
    if [ "$broker" = rcluster ]; then
        REDIS_EXTRA="--cluster-enabled yes"
        broker=redis
    fi
    if [ "$broker" = redis ]; then
        for n in $(seq 2 "$shards"); do
            start_redis "$name-shard$n" || return 1
            SHARD_PIDS+=("$REDIS_PID")
            SHARD_LOGS+=("$REDIS_LOG")
            SHARD_PORTS+=("$REDIS_PORT")
            REDIS_PID=
        done
        start_redis "$name" || return 1
        urls=redis://127.0.0.1:$REDIS_PORT
        for port in "${SHARD_PORTS[@]}"; do urls+=,redis://127.0.0.1:$port; done
        bflags=(--broker "$urls" --redis-prefix bench:)
        if [ -n "$REDIS_EXTRA" ]; then
            local addrs=(127.0.0.1:$REDIS_PORT)
            for port in "${SHARD_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
            redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
                >"$TMP/$name-cluster-create.log" 2>&1 || {
                echo "bench: redis-cli --cluster create failed" >&2
                return 1
            }
            for port in "$REDIS_PORT" "${SHARD_PORTS[@]}"; do
                for _ in $(seq 1 100); do
                    redis-cli -p "$port" CLUSTER INFO 2>/dev/null | grep -q cluster_state:ok && break
                    sleep 0.1
                done
            done
            bflags=(--broker "redis+cluster://127.0.0.1:$REDIS_PORT" --redis-prefix bench:)
        fi
    fi
    SRV_PIDS=()
    SRV_LOGS=()
    SRV_TARGETS=
    for n in $(seq 1 "$nodes"); do
        log=$TMP/$name-node$n.log
        # shellcheck disable=SC2086 # BENCH_SERVER_ARGS is a list of flags
        (exec "$BIN" --listen 127.0.0.1:0 --auth=none --max-conns-per-user 3 "${bflags[@]}" \
            ${BENCH_SERVER_ARGS:-} 2>"$log") &
        pid=$!
        SRV_PIDS+=("$pid")
        SRV_LOGS+=("$log")
        if ! port=$(wait_listening "$pid" "$log" "$BIN"); then
            stop_server || true
            return 1
        fi
        SRV_TARGETS+=${SRV_TARGETS:+,}127.0.0.1:$port
    done
    SRV_PID=${SRV_PIDS[0]}
    SRV_LOG=${SRV_LOGS[0]}
    if [ "$broker" = redis ]; then
        # every node's heartbeat key first: a connection a node registers before its first
        # heartbeat is dropped from the registry by the next publish (see bench/README.md)
        for _ in $(seq 1 50); do
            # With --threads every loop is a node of the cluster: one heartbeat per loop
            # (each daemon logs event=loops_started loops=N; none means one loop).
            want=0
            for log in "${SRV_LOGS[@]}"; do
                n=$(grep -o 'event=loops_started loops=[0-9]*' "$log" | head -1 | sed 's/.*=//')
                want=$((want + ${n:-1}))
            done
            first=1
            for port in "$REDIS_PORT" "${SHARD_PORTS[@]}"; do
                # (in a Redis Cluster the heartbeats are bench:{TAG}n:NODE)
                [ "$(redis_line "$port" 'KEYS bench:*n:*')" = "*$want" ] || first=0
            done
            [ "$first" = 1 ] && return 0
            sleep 0.1
        done
        echo "bench: the nodes' heartbeats did not show up in Redis within 5 s" >&2
        stop_server || true
        return 1
    fi
}

# Busy CPU ticks of the whole machine (user nice system irq softirq steal), for the share of
# the run's CPU that neither the server nor the loadgen used: other tenants of the machine.
busy_ticks() {
    awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat
}

# record JSON PEER REP WALL_S BUSY_TICKS: prints the line and appends it with run fields.
record() {
    local line=$1
    if [ -n "${RESULTS:-}" ]; then
        local hz busy
        hz=$(getconf CLK_TCK)
        busy=$(awk -v t="$5" -v hz="$hz" 'BEGIN{printf "%.2f", t / hz}')
        line="{\"run\":\"$RUN_ID\",\"peer\":\"$2\",\"rep\":$3,\"wall_s\":$4,\"machine_busy_s\":$busy,${line#\{}"
        echo "$line" >>"$RESULTS"
    fi
    echo "$line"
}

now_s() {
    date +%s.%N
}

# scenario NAME PEER REP [loadgen flags...]: one fresh server, one loadgen run. With TOPO
# "memory 1" or "redis 2" (BROKER NODES): a fresh cluster instead, agentcast only, nothing
# pinned, the loadgen spreading over the nodes (and, on Redis, reading its INFO and CPU).
failed=0
scenario() {
    local name=$1 peer=$2 rep=$3 out rc=0 quiet=() t0 b0 wall busy topo=() target=() lg_pin=()
    local lat_pid=
    shift 3
    [ "$MODE" = smoke ] && quiet=(--quiet)
    read -r -a topo <<<"${TOPO:-}"
    if [ ${#topo[@]} -ge 2 ]; then
        start_cluster "$name" "${topo[1]}" "${topo[0]}" "${topo[2]:-1}" || {
            failed=1
            return 0
        }
        target=(--targets "$SRV_TARGETS" --pid "$(
            IFS=,
            echo "${SRV_PIDS[*]}"
        )")
        if [ -n "$REDIS_PID" ]; then
            local bpids=$REDIS_PID raddrs=127.0.0.1:$REDIS_PORT p
            for p in "${SHARD_PIDS[@]}"; do bpids+=,$p; done
            for p in "${SHARD_PORTS[@]}"; do raddrs+=,127.0.0.1:$p; done
            target+=(--broker-pid "$bpids" --redis "$raddrs")
        fi
    else
        start_server "$name" "$peer" || {
            failed=1
            return 0
        }
        target=(--port "$SRV_PORT" --pid "$SRV_PID")
        lg_pin=("${LG_PIN[@]}")
    fi
    if [ "${BENCH_PERF:-0}" = 1 ] && [ "$peer" = agentcast ] && [ -n "${RESULTS_DIR:-}" ] &&
        command -v perf >/dev/null; then
        perf record -q -F 499 -g -p "$SRV_PID" -o "$RESULTS_DIR/perf-$name-$rep.data" \
            2>/dev/null &
        PERF_PID=$!
    fi
    local what="$name [$peer, rep $rep]"
    [ "$MODE" = smoke ] && what=$name
    echo "bench: $what: loadgen ${target[*]} $*" >&2
    # Redis's own view of its latency during the run: redis-cli PINGs it every 10 ms; with
    # --raw it reports "min max avg samples" (ms) after one second and exits, so one after
    # the other until the loadgen is done
    if [ -n "$REDIS_PID" ] && command -v redis-cli >/dev/null 2>&1; then
        rm -f "$TMP/redis-latency.stop"
        : >"$TMP/redis-latency"
        (while [ ! -e "$TMP/redis-latency.stop" ]; do
            redis-cli -p "$REDIS_PORT" --latency --raw 2>/dev/null || break
        done >>"$TMP/redis-latency") &
        lat_pid=$!
    fi
    t0=$(now_s)
    b0=$(busy_ticks)
    out=$("${lg_pin[@]}" "$LOADGEN" "${target[@]}" --label "$name" "${quiet[@]}" "$@") || rc=$?
    wall=$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN{printf "%.2f", b - a}')
    busy=$(($(busy_ticks) - b0))
    if [ -n "$lat_pid" ]; then
        # the seconds that ended while the loadgen ran, merged
        local lat lines
        lines=$(wc -l <"$TMP/redis-latency")
        touch "$TMP/redis-latency.stop"
        wait "$lat_pid" 2>/dev/null || true
        lat=$(head -n "$lines" "$TMP/redis-latency" | awk '
            NF == 4 { if (n == 0 || $1 < lo) lo = $1; if ($2 > hi) hi = $2; sum += $3 * $4; n += $4 }
            END { if (n) printf "{\"min\":%s,\"max\":%s,\"avg\":%.2f,\"samples\":%d}", lo, hi, sum / n, n }')
        [ -n "$lat" ] && [ -n "$out" ] && out="${out%\}},\"redis_cli_latency_ms\":$lat}"
    fi
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=
        perf report -i "$RESULTS_DIR/perf-$name-$rep.data" --stdio --no-children \
            --percent-limit 0.7 2>/dev/null | grep -v '^$' | head -n 400 \
            >"$RESULTS_DIR/perf-$name-$rep.txt" || true
    fi
    [ -n "$out" ] && record "$out" "$peer" "$rep" "$wall" "$busy"
    if [ "$rc" -ne 0 ]; then
        echo "bench: $name [$peer]: loadgen exited $rc; server log tail:" >&2
        tail -n 20 "$SRV_LOG" >&2
        failed=1
    fi
    stop_server || failed=1
}

if [ "$MODE" = smoke ]; then
    scenario smoke agentcast 1 --users 50 --conns-per-user 2 --events 500 --batch 100 --timeout 20
    # the loadgen over two nodes sharing a Redis: every user on both, publishers on both
    if [ -x "$REDIS_BIN" ]; then
        TOPO="redis 2" scenario smoke-redis2 agentcast 1 --users 50 --conns-per-user 2 \
            --events 1000 --publishers 2 --via agent --batch 50 --window 4 --timeout 20
    else
        echo "bench: smoke-redis2 skipped: no $REDIS_BIN" >&2
    fi
    exit $failed
fi

# ---- full and quick: what they need beyond make all

if [ ! -x "$SENDPROBE" ]; then
    echo "bench: $SENDPROBE not built (make all)" >&2
    exit 2
fi
if ! command -v node >/dev/null 2>&1; then
    echo "bench: node is required for the Node.js peer (scripts/deps.sh)" >&2
    exit 2
fi
if [ ! -d "$PEER_DIR/node_modules/ws" ]; then
    echo "bench: npm ci ($PEER_DIR)" >&2
    (cd "$PEER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v gnuplot >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bench: installing gnuplot-nox for the charts" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq gnuplot-nox >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null; } ||
            echo "bench: could not install gnuplot-nox; no charts" >&2
    else
        echo "bench: no charts without gnuplot: sudo apt-get install -y gnuplot-nox" >&2
    fi
fi

if [ "$QUICK" = 1 ]; then
    REPS=${BENCH_REPS:-1}
    EV1=100000 EV2=100000 EV4=30000 RUNS5=1000 EV6=60000 EV7B=200000 EV7S=20000
    EVC=50000 EVCR=20000
    IDLE=(s3-idle-10k)
    TIMEOUT=120
else
    REPS=${BENCH_REPS:-3}
    EV1=1000000 EV2=400000 EV4=300000 RUNS5=1000 EV6=200000 EV7B=1000000 EV7S=100000
    EVC=200000 EVCR=50000
    IDLE=(s3-idle-10k s3-idle-19k)
    TIMEOUT=300
fi
read -r -a PEERS <<<"${BENCH_PEERS:-agentcast node}"
RUN_ID=$(date +%Y%m%dT%H%M%S)
RESULTS_DIR=${BENCH_RESULTS_DIR:-bench/results/$(date +%F)}
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/raw.jsonl

# run_scenario NAME PEER REP: the loadgen flags of each scenario, in one place.
run_scenario() {
    local name=$1 peer=$2 rep=$3 f
    case "$name" in
    s1-fanout) # 10k users x 1, events to random users, 1,000 events in flight
        f=(--users 10000 --events "$EV1" --via agent --batch 100 --window 10) ;;
    s2-latency) # 10k users x 1, a fixed 20,000 events/s, one event per publish frame; the
        # loadgen busy-polls its own core, so its wake-ups stay out of the latency figures
        f=(--users 10000 --events "$EV2" --rate 20000 --via agent --batch 1 --window 1000
            --busy-poll) ;;
    s3-idle-10k) f=(--users 10000 --idle) ;;
    s3-idle-19k) f=(--users 19000 --idle) ;;
    s4-multi) # 1k users x 3 connections: every event to all three
        f=(--users 1000 --conns-per-user 3 --events "$EV4" --via agent --batch 100 --window 10) ;;
    s5-stream) # 1k concurrent runs x (agent_started, 200 x 40-byte thoughts, agent_completed)
        f=(--users 1000 --stream-runs "$RUNS5" --chunks 200 --chunk-bytes 40 --chunk-burst 10
            --via agent --batch 100 --window 10) ;;
    s6-storm) # 10k users at 20,000 events/s; all dropped at once halfway, resumed
        f=(--users 10000 --events "$EV6" --rate 20000 --via agent --batch 1 --window 1000
            --storm --storm-at 0.5 --connect-concurrency 10000) ;;
    s7-http-batch) # 16 keep-alive publishers, 100-event arrays, one request in flight each
        f=(--users 1000 --events "$EV7B" --via http --publishers 16 --batch 100 --window 1) ;;
    s7-http-single) # the same with one event (an object) per request
        f=(--users 1000 --events "$EV7S" --via http --publishers 16 --batch 1 --window 1) ;;
    memory1 | redis2 | redis2-shards2 | redis2-cluster3) # 2k users x 2 conns (one on each
        # node), 2 publishers (one per node), 100-event frames, 10 in flight each: the same load
        # on 1 memory node, 2 nodes on one Redis, on 2 Redis shards, or on a 3-master cluster
        f=(--users 2000 --conns-per-user 2 --events "$EVC" --via agent --publishers 2 --batch 100
            --window 10) ;;
    memory1-rate | redis2-rate) # the same users at a fixed 5,000 events/s, one per frame
        f=(--users 2000 --conns-per-user 2 --events "$EVCR" --rate 5000 --via agent
            --publishers 2 --batch 1 --window 1000) ;;
    *)
        echo "bench: unknown scenario $name" >&2
        return 1
        ;;
    esac
    local cluster=
    case "$name" in
    memory1*) cluster="memory 1" ;;
    redis2-shards2*) cluster="redis 2 2" ;;
    redis2-cluster3*) cluster="rcluster 2 3" ;;
    redis2*) cluster="redis 2" ;;
    esac
    TOPO=$cluster scenario "$name" "$peer" "$rep" "${f[@]}" --timeout "$TIMEOUT"
}

SCENARIOS=(s1-fanout s2-latency "${IDLE[@]}" s4-multi s5-stream s6-storm s7-http-batch
    s7-http-single memory1 redis2 redis2-shards2 redis2-cluster3 memory1-rate redis2-rate)
echo "bench: run $RUN_ID, $REPS repetition(s), peers: ${PEERS[*]}, results in $RESULTS_DIR" >&2
for rep in $(seq 1 "$REPS"); do
    if [ -z "${BENCH_ONLY:-}" ] || [[ sendprobe =~ $BENCH_ONLY ]]; then
        echo "bench: sendprobe [rep $rep]" >&2
        t0=$(now_s)
        b0=$(busy_ticks)
        if out=$("$SENDPROBE" --pairs 5000 --frame-bytes 150 --batch 8 --seconds 3 \
            --writer-cpu 0 --reader-cpu 1); then
            record "$out" machine "$rep" "$(awk -v a="$t0" -v b="$(now_s)" \
                'BEGIN{printf "%.2f", b - a}')" $(($(busy_ticks) - b0))
        else
            echo "bench: sendprobe failed" >&2
            failed=1
        fi
    fi
    # alternate which peer goes first, so a drift in the machine's load hits both alike
    order=("${PEERS[@]}")
    if [ $((rep % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#PEERS[@]} - 1; i >= 0; i--)); do order+=("${PEERS[i]}"); done
    fi
    for name in "${SCENARIOS[@]}"; do
        if [ $((rep % 2)) -eq 0 ]; then
            # memory1 and redis2 alternate too: the second of each pair goes first
            case "$name" in
            memory1) name=redis2 ;;
            redis2) name=memory1 ;;
            memory1-rate) name=redis2-rate ;;
            redis2-rate) name=memory1-rate ;;
            esac
        fi
        if [ -n "${BENCH_ONLY:-}" ] && ! [[ $name =~ $BENCH_ONLY ]]; then
            continue
        fi
        for peer in "${order[@]}"; do
            # the Node peer keeps no history: it cannot resume, so the storm is agentcast's
            [ "$name" = s6-storm ] && [ "$peer" = node ] && continue
            # nor a Redis broker: the several-node comparison is agentcast's alone
            case "$name" in memory1* | redis2*) [ "$peer" = node ] && continue ;; esac
            run_scenario "$name" "$peer" "$rep"
        done
    done
done

echo "bench: results appended to $RESULTS" >&2
# what was measured: the commit, and whether the daemon's sources differed from it
BUILT_FROM=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$BUILT_FROM" != unknown ] && ! git diff --quiet HEAD -- src include 2>/dev/null; then
    BUILT_FROM="$BUILT_FROM + uncommitted changes in src/ or include/"
fi
if node bench/summarize.mjs "$RESULTS" "$RUN_ID" "$RESULTS_DIR" "$QUICK" "$BUILT_FROM"; then
    if command -v gnuplot >/dev/null 2>&1; then
        (cd "$RESULTS_DIR" && gnuplot charts.gp) || echo "bench: gnuplot failed" >&2
    fi
    cat "$RESULTS_DIR/summary.md"
else
    echo "bench: summarize failed" >&2
    failed=1
fi
exit $failed
