// A Node.js agent backend streaming one whole run to agentcast over the persistent
// publisher socket GET /v1/agent: one text frame per publish, one reply per frame, in
// order. Uses the `ws` package (npm install ws) where there is no global WebSocket.
//
//   node examples/node_agent.mjs --url ws://127.0.0.1:8080 --user u1 [--api-key K]
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
    options: {
        url: { type: 'string', default: 'ws://127.0.0.1:8080' },
        user: { type: 'string', default: 'u1' },
        'api-key': { type: 'string' },
        thread: { type: 'string', default: 'node-thread' },
    },
});
const WebSocket = createRequire(import.meta.url)('ws');

const headers = args['api-key'] ? { Authorization: `Bearer ${args['api-key']}` } : {};
const ws = new WebSocket(`${args.url.replace(/\/$/, '')}/v1/agent`, { headers });
const waiting = []; // one reply per frame, in order
ws.on('message', (m) => waiting.shift()?.(JSON.parse(m)));
ws.on('unexpected-response', (req, res) => {
    console.error(`refused: HTTP ${res.statusCode}`);
    process.exit(1);
});
await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
});

function publish(event) {
    return new Promise((resolve, reject) => {
        waiting.push((reply) => (reply.error ? reject(new Error(`${reply.status} ${reply.error}`)) : resolve(reply)));
        ws.send(JSON.stringify(event));
    });
}

const run = `node-${Math.random().toString(16).slice(2, 14)}`;
const base = { user_id: args.user, run_id: run, thread_id: args.thread };
await publish({ ...base, type: 'agent_started', data: { agent: 'node-agent' } });
// Token streaming: send without waiting for each reply; the socket keeps them in order.
const chunks = 'Summing the numbers with the add tool.'.split(' ').map((w) => publish({ ...base, type: 'agent_thinking', data: { thought: `${w} ` } }));
await Promise.all(chunks);
await publish({ ...base, type: 'tool_executing', data: { tool: 'add', tool_call_id: 'call-1', args: [2, 3] } });
await publish({ ...base, type: 'tool_completed', data: { tool: 'add', tool_call_id: 'call-1', result: 5 } });
const last = await publish({ ...base, type: 'agent_completed', data: { result: '2 + 3 = 5' } });
console.log(JSON.stringify({ run_id: run, last_seq: last.seq }));
ws.close();
