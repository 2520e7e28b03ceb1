#!/usr/bin/env bash
# `make run-cluster`: two gateway nodes on one Redis, in development mode, to try the
# several-node setup on one machine: redis-server on 127.0.0.1:$REDIS_PORT (default 6390,
# no persistence, its files in a temporary directory), node A on 127.0.0.1:8080 and node B on
# 127.0.0.1:8081, both --auth=none --demo --broker=redis://127.0.0.1:$REDIS_PORT. Ctrl-C
# stops the nodes (gracefully), then Redis. Extra node flags: make run-cluster ARGS="...".
set -euo pipefail
cd "$(dirname "$0")/.."
rport="${REDIS_PORT:-6390}"
a="${NODE_A:-127.0.0.1:8080}"
b="${NODE_B:-127.0.0.1:8081}"
dir="$(mktemp -d)"
pids=()
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
    kill -TERM "${pids[0]}" 2>/dev/null || true
    wait "${pids[0]}" 2>/dev/null || true
    rm -rf "$dir"
}
trap stop INT TERM EXIT

# Their own sessions: Ctrl-C reaches this script only, which stops the nodes once (a second
# signal would make them exit at once instead of closing their clients), then Redis.
setsid redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" &
pids+=($!)
for _ in $(seq 50); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$rport" ping >/dev/null || { echo "cluster: redis-server did not start on $rport" >&2; exit 1; }
for n in "$a" "$b"; do
    setsid build/agentcastd --listen "$n" --auth=none --demo --broker="redis://127.0.0.1:$rport" \
        ${ARGS:-} &
    pids+=($!)
done
cat <<TXT

agentcast, two nodes on one Redis (development mode: --auth=none --demo)

  node A:   http://$a/        node B: http://$b/        (the same chat, either node)
  try:      open http://$a/?user_id=u1 and http://$b/?user_id=u1: one user, two nodes;
            a message typed in either tab is answered in both
  publish:  curl -s http://$a/v1/publish -d '{"user_id":"u1","type":"agent_started","run_id":"r1","data":{"agent":"demo"}}'
  stats:    curl -s http://$b/v1/stats   (broker_up, broker_rtt_us, ...)
  stop:     Ctrl-C

TXT
wait -n "${pids[@]}"
