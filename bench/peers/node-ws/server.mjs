// The benchmark's peer: agentcast's job done the idiomatic Node.js way (node:http and the npm
// `ws` package), speaking enough of the same wire protocol (README.md) that bench/loadgen
// drives it unchanged: /ws?user_id= with a `connected` message carrying last_seq, per-user
// seq, envelopes like agentcast's, POST /v1/publish (an object or an array) and the
// /v1/agent publisher socket with one {seq,delivered} reply per frame, app-level pings.
// Not a port of agentcast: no auth, no history or resume (last_seq= is ignored), no run
// lifecycle, no idempotency, no per-user or global caps, no output-queue limit.
//
//   node server.mjs [--listen 127.0.0.1:0] [--ping-interval 30]
//
// Logs `event=listening addr=HOST:PORT` on stderr like agentcastd; SIGTERM closes every
// socket and exits 0.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';

const MAX_BODY = 1 << 20;

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 0, pingInterval: 30 };
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (name === '--listen') {
      const v = value();
      const at = v.lastIndexOf(':');
      opts.host = v.slice(0, at).replace(/^\[|\]$/g, '');
      opts.port = Number(v.slice(at + 1));
    } else if (name === '--ping-interval') {
      opts.pingInterval = Number(value());
    } else {
      console.error(`usage: node server.mjs [--listen HOST:PORT] [--ping-interval S] (${name}?)`);
      process.exit(2);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const epoch = randomBytes(4).toString('hex');
const users = new Map(); // user_id -> { seq, sockets: Set<WebSocket> }
let nextConnId = 0;

function userOf(id) {
  let u = users.get(id);
  if (!u) {
    u = { seq: 0, sockets: new Set() };
    users.set(id, u);
  }
  return u;
}

class PublishError extends Error {
  constructor(status, message, index) {
    super(message);
    this.status = status;
    this.index = index;
  }
}

function check(ev, index) {
  if (ev === null || typeof ev !== 'object' || Array.isArray(ev))
    throw new PublishError(400, 'body: must be an object or an array of objects', index);
  if (typeof ev.user_id !== 'string' || ev.user_id === '')
    throw new PublishError(400, 'user_id: required', index);
  if (typeof ev.type !== 'string' || ev.type === '')
    throw new PublishError(400, 'type: required', index);
  if (ev.data !== undefined && (ev.data === null || typeof ev.data !== 'object' || Array.isArray(ev.data)))
    throw new PublishError(400, 'data: must be an object', index);
}

function publishOne(ev, timestamp) {
  const u = userOf(ev.user_id);
  const seq = ++u.seq;
  const env = { type: ev.type, seq, user_id: ev.user_id };
  if (ev.run_id !== undefined) env.run_id = ev.run_id;
  if (ev.thread_id !== undefined) env.thread_id = ev.thread_id;
  env.timestamp = timestamp;
  env.data = ev.data ?? {};
  const text = JSON.stringify(env);
  let delivered = 0;
  for (const ws of u.sockets) {
    if (ws.readyState === ws.OPEN) {
      ws.send(text);
      delivered++;
    }
  }
  return { seq, delivered };
}

// One publish body (JSON text): { status, reply } where reply is the object to answer.
function publishBody(text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    return { status: 400, reply: { error: `invalid JSON: ${e.message}` } };
  }
  try {
    const timestamp = new Date().toISOString();
    if (Array.isArray(body)) {
      if (body.length === 0) throw new PublishError(400, 'body: empty array');
      body.forEach(check); // all or nothing
      return { status: 200, reply: body.map((ev) => publishOne(ev, timestamp)) };
    }
    check(body);
    return { status: 200, reply: publishOne(body, timestamp) };
  } catch (e) {
    if (!(e instanceof PublishError)) throw e;
    const reply = { error: e.message };
    if (e.index !== undefined) reply.index = e.index;
    return { status: e.status, reply };
  }
}

function sendJson(res, status, obj) {
  const out = JSON.stringify(obj);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(out),
  });
  res.end(out);
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (path === '/healthz') return sendJson(res, 200, { status: 'ok' });
  if (path !== '/v1/publish') return sendJson(res, 404, { error: 'not found' });
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    return sendJson(res, 405, { error: 'method not allowed' });
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return sendJson(res, 413, { error: 'body: too large' });
    const { status, reply } = publishBody(Buffer.concat(chunks).toString('utf8'));
    sendJson(res, status, reply);
  });
});
server.keepAliveTimeout = 10_000;

const wss = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  perMessageDeflate: false,
  maxPayload: MAX_BODY,
});

function refuse(socket, status, reason) {
  const body = JSON.stringify({ error: reason });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

function onUserSocket(ws, userId, threadId) {
  const u = userOf(userId);
  u.sockets.add(ws);
  const connected = { type: 'connected', user_id: userId };
  if (threadId) connected.thread_id = threadId;
  connected.timestamp = new Date().toISOString();
  connected.data = {
    connection_id: `c${(++nextConnId).toString(16)}`,
    last_seq: u.seq,
    epoch,
    recovered: false,
  };
  ws.send(JSON.stringify(connected));
  ws.on('message', () => {}); // pong or anything: liveness only
  ws.on('error', () => {});
  ws.on('close', () => u.sockets.delete(ws));
}

function onAgentSocket(ws) {
  ws.on('message', (data, isBinary) => {
    const { status, reply } = isBinary
      ? { status: 400, reply: { error: 'binary messages are not supported' } }
      : publishBody(data.toString('utf8'));
    if (status !== 200) reply.status = status;
    ws.send(JSON.stringify(reply));
  });
  ws.on('error', () => {});
}

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/ws') {
    const userId = url.searchParams.get('user_id');
    if (!userId) return refuse(socket, 400, 'user_id required');
    const threadId = url.searchParams.get('thread_id');
    wss.handleUpgrade(req, socket, head, (ws) => onUserSocket(ws, userId, threadId));
  } else if (url.pathname === '/v1/agent') {
    wss.handleUpgrade(req, socket, head, onAgentSocket);
  } else {
    refuse(socket, 404, 'not found');
  }
});

if (opts.pingInterval > 0) {
  setInterval(() => {
    const ping = JSON.stringify({ type: 'ping', timestamp: new Date().toISOString() });
    for (const u of users.values()) {
      for (const ws of u.sockets) {
        ws.send(ping);
        ws.ping();
      }
    }
  }, opts.pingInterval * 1000).unref();
}

server.listen({ host: opts.host, port: opts.port, backlog: 4096 }, () => {
  const a = server.address();
  console.error(`event=listening addr=${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
});

function shutdown() {
  server.close();
  for (const u of users.values()) for (const ws of u.sockets) ws.terminate();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
