#!/usr/bin/env bash
# `make run`: starts the gateway in development mode on 127.0.0.1:8080 and says how to
# connect and publish. Extra flags: make run ARGS="--log-level debug".
set -euo pipefail
cd "$(dirname "$0")/.."
listen="${AGENTCAST_LISTEN:-127.0.0.1:8080}"
cat <<TXT
agentcast (development mode: --auth=none --demo, any client may claim any user_id)

  open:     http://$listen/            the demo chat (a built-in agent answers)
            http://$listen/dashboard   live stats

  connect:  node -e "const W=require('./tests/node_modules/ws');const w=new W('ws://$listen/ws?user_id=u1');w.on('message',m=>console.log(String(m)))"
            (or any WebSocket client: ws://$listen/ws?user_id=u1)
  publish:  curl -s http://$listen/v1/publish -d '{"user_id":"u1","type":"agent_started","run_id":"r1","data":{"agent":"demo"}}'
  stats:    curl -s http://$listen/v1/stats
  stop:     Ctrl-C (graceful: clients get close 1001)

TXT
exec build/agentcastd --listen "$listen" --auth=none --demo ${ARGS:-}
