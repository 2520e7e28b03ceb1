// Helpers for the agentcastd integration tests: start/stop the real daemon on 127.0.0.1
// port 0, `ws` clients with an awaitable inbox, publish over fetch, and raw TCP clients
// (hand-made HTTP, and a minimal WebSocket client that never answers pings on its own).
// Every wait here is bounded by a timeout, so a test can fail but never hang.

import { spawn } from 'node:child_process';
import net from 'node:net';
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.AGENTCAST_BIN || path.join(REPO, 'build', 'agentcastd');
export const HOST = '127.0.0.1';

/** ISO-8601 UTC with milliseconds and Z, as the contract requires. */
export const TS_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

export const CRITICAL = {
    agent_started: { agent: 'planner' },
    agent_thinking: { thought: 'Looking at the question' },
    tool_executing: { tool: 'search', tool_call_id: 'call-1' },
    tool_completed: { tool: 'search', tool_call_id: 'call-1', result: { hits: 3 } },
    agent_completed: { result: 'The answer is 42' },
};
export const REQUIRED_FIELDS = {
    agent_started: ['agent'],
    agent_thinking: ['thought'],
    tool_executing: ['tool', 'tool_call_id'],
    tool_completed: ['tool', 'tool_call_id', 'result'],
    agent_completed: ['result'],
    agent_error: ['error'],
};
export const RESERVED_TYPES = ['connected', 'ping', 'resync', 'error', 'closing'];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let uniq = 0;
/** A user id unique within this test process. */
export function uid(prefix = 'u') {
    uniq += 1;
    return `${prefix}-${process.pid}-${uniq}`;
}

/** Resolves `p`, or rejects with `what` after `ms`. */
export function withTimeout(p, ms, what) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it returns a truthy value; returns that value or throws after ms. */
export async function waitFor(fn, ms, what, every = 25) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
        last = await fn();
        if (last) return last;
        if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms: ${what}`);
        await sleep(every);
    }
}

// ------------------------------------------------------------------------------------------
// The daemon

const running = new Set();
process.on('exit', () => {
    for (const p of running) {
        try {
            p.kill('SIGKILL');
        } catch {
            /* already gone */
        }
    }
});

/**
 * Spawns the daemon with `--listen 127.0.0.1:0` plus `args`, waits for the
 * `event=listening addr=HOST:PORT` log line on stderr, and returns
 * {port, proc, logs, exited, stop()}. The child's environment is this process's minus
 * every AGENTCAST_* variable but AGENTCAST_THREADS (so the harness's own AGENTCAST_BIN never
 * leaks in as a flag), plus `env`.
 */
export async function startDaemon(args = [], env = {}, { startTimeoutMs = 5000, nofile } = {}) {
    const childEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
        // AGENTCAST_THREADS passes: `make test` runs the suites at --threads 1 and 4.
        if (!k.startsWith('AGENTCAST_') || k === 'AGENTCAST_THREADS') childEnv[k] = v;
    }
    Object.assign(childEnv, env);
    // `nofile`: the daemon runs with that open-file limit, soft and hard (exec: same pid).
    const argv = ['--listen', `${HOST}:0`, ...args];
    const proc = nofile
        ? spawn('/bin/sh', ['-c', `ulimit -n ${Number(nofile)} && exec "$0" "$@"`, BIN, ...argv], {
              env: childEnv,
              stdio: ['ignore', 'pipe', 'pipe'],
          })
        : spawn(BIN, argv, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(proc);
    const logs = [];
    let partial = '';
    let onLine = () => {};
    const exited = new Promise((resolve) => {
        proc.on('exit', (code, signal) => {
            running.delete(proc);
            resolve({ code, signal });
        });
    });
    proc.on('error', (err) => logs.push(`spawn error: ${err.message}`));
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (s) => logs.push(...s.split('\n').filter(Boolean).map((l) => `stdout: ${l}`)));
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (s) => {
        partial += s;
        let i;
        while ((i = partial.indexOf('\n')) >= 0) {
            const line = partial.slice(0, i);
            partial = partial.slice(i + 1);
            logs.push(line);
            onLine(line);
        }
    });

    const listening = new Promise((resolve, reject) => {
        onLine = (line) => {
            const m = /event=listening\b.*\baddr=([0-9.]+):(\d+)/.exec(line);
            if (m) resolve(Number(m[2]));
        };
        exited.then(({ code, signal }) =>
            reject(new Error(`daemon exited before listening (code=${code} signal=${signal})`)),
        );
    });

    let port;
    try {
        port = await withTimeout(listening, startTimeoutMs, 'daemon log line event=listening');
    } catch (err) {
        proc.kill('SIGKILL');
        await withTimeout(exited, 5000, 'daemon exit after SIGKILL').catch(() => {});
        err.message += `\nargs: ${args.join(' ')}\nlogs:\n${logs.join('\n')}`;
        throw err;
    }

    let stopping = null;
    const d = {
        port,
        proc,
        logs,
        exited,
        url: `http://${HOST}:${port}`,
        wsUrl: `ws://${HOST}:${port}`,
        /**
         * SIGTERM, wait for exit (SIGKILL after killAfterMs). Resolves {code, signal, killed}.
         * Rejects when the daemon crashed before (died of a signal it was not sent) or when its
         * output holds a sanitizer report, so a test that crashed the daemon never passes.
         */
        stop({ signal = 'SIGTERM', killAfterMs = 5000 } = {}) {
            if (stopping) return stopping;
            stopping = (async () => {
                let r;
                const crashedBefore = proc.exitCode !== null || proc.signalCode !== null;
                if (crashedBefore) {
                    r = { ...(await exited), killed: false };
                } else {
                    proc.kill(signal);
                    try {
                        r = { ...(await withTimeout(exited, killAfterMs, 'daemon exit')), killed: false };
                    } catch {
                        proc.kill('SIGKILL');
                        r = { ...(await withTimeout(exited, 5000, 'daemon exit after SIGKILL')), killed: true };
                    }
                }
                await new Promise((res) => setImmediate(res)); // let the last stderr chunks land
                const report = sanitizerReport(logs);
                if (report) throw new Error(`daemon sanitizer report:\n${report}`);
                if (crashedBefore && r.signal) {
                    throw new Error(`daemon died of ${r.signal} during the test; logs:\n${logs.slice(-30).join('\n')}`);
                }
                return r;
            })();
            return stopping;
        },
    };
    return d;
}

// Sanitizer reports, and valgrind's (make valgrind): a definite leak or any memory error.
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|runtime error:|SUMMARY: \w+Sanitizer|definitely lost: [1-9]|Invalid (read|write|free)|uninitialised value/;

/** The sanitizer report in the daemon's output, or null. */
export function sanitizerReport(logs) {
    const i = logs.findIndex((l) => SANITIZER_RE.test(l));
    return i < 0 ? null : logs.slice(Math.max(0, i - 2), i + 60).join('\n');
}

/** Starts a daemon and registers its stop() with the node:test context `t`. */
export async function daemonFor(t, args = [], env = {}, opts = {}) {
    const d = await startDaemon(args, env, opts);
    t.after(() => d.stop());
    return d;
}

// ------------------------------------------------------------------------------------------
// An awaitable inbox shared by both WebSocket clients

class Inbox {
    constructor(describe) {
        this.all = []; // everything ever received, in order
        this.queue = []; // not yet taken by next()
        this.waiters = [];
        this.ended = null; // reason string once no more items can arrive
        this.describe = describe;
    }

    push(item) {
        this.all.push(item);
        this.queue.push(item);
        for (const w of [...this.waiters]) {
            const i = this.queue.findIndex(w.pred);
            if (i >= 0) {
                const [it] = this.queue.splice(i, 1);
                this.waiters.splice(this.waiters.indexOf(w), 1);
                w.resolve(it);
            }
        }
    }

    end(reason) {
        this.ended = reason;
        for (const w of this.waiters.splice(0)) {
            w.reject(new Error(`${w.what}: ${reason} before it arrived; ${this.describe()}`));
        }
    }

    /** The first not-yet-taken item matching pred (it is taken); waits up to timeoutMs. */
    next(pred = () => true, timeoutMs = 2000, what = 'message') {
        const i = this.queue.findIndex(pred);
        if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
        if (this.ended) {
            return Promise.reject(new Error(`${what}: ${this.ended} before it arrived; ${this.describe()}`));
        }
        return new Promise((resolve, reject) => {
            const w = { pred, resolve, reject, what };
            w.timer = setTimeout(() => {
                const k = this.waiters.indexOf(w);
                if (k >= 0) this.waiters.splice(k, 1);
                reject(new Error(`timeout after ${timeoutMs} ms waiting for ${what}; ${this.describe()}`));
            }, timeoutMs);
            const done = (f) => (v) => {
                clearTimeout(w.timer);
                f(v);
            };
            w.resolve = done(resolve);
            w.reject = done(reject);
            this.waiters.push(w);
        });
    }
}

const short = (v) => {
    const s = JSON.stringify(v);
    return s && s.length > 300 ? `${s.slice(0, 300)}...` : s;
};

const byType = (type) => (m) => m && m.type === type;
/** Predicate: any message that is not an app-level ping. */
export const notPing = (m) => m && m.type !== 'ping';
export { byType };

// ------------------------------------------------------------------------------------------
// `ws` clients (auto-answer ping frames, like browsers do)

/** An HTTP refusal of a WebSocket upgrade. */
export class Refused extends Error {
    constructor(status, headers, body) {
        super(`upgrade refused: HTTP ${status} ${body}`);
        this.status = status;
        this.headers = headers;
        this.body = body;
        try {
            this.json = JSON.parse(body);
        } catch {
            this.json = undefined;
        }
    }
}

export class WsClient {
    constructor(ws) {
        this.ws = ws;
        this.pingFrames = 0;
        this.closeInfo = null;
        this.errors = [];
        this.inbox = new Inbox(() => `received: ${short(this.inbox.all)} close: ${short(this.closeInfo)}`);
        this.closed = new Promise((resolve) => {
            ws.on('close', (code, reason) => {
                this.closeInfo = { code, reason: reason.toString() };
                this.inbox.end(`connection closed (code ${code})`);
                resolve(this.closeInfo);
            });
        });
        ws.on('message', (data, isBinary) => {
            let msg;
            try {
                msg = JSON.parse(data.toString());
            } catch {
                msg = { __unparsable: data.toString(), __binary: isBinary };
            }
            this.inbox.push(msg);
        });
        ws.on('ping', () => {
            this.pingFrames += 1;
        });
        ws.on('error', (err) => this.errors.push(err));
    }

    /** Every parsed message received so far, in order. */
    get all() {
        return this.inbox.all;
    }

    get connectionId() {
        return this.hello?.data?.connection_id;
    }

    get isOpen() {
        return this.ws.readyState === WebSocket.OPEN;
    }

    next(pred, timeoutMs = 2000, what) {
        return this.inbox.next(pred, timeoutMs, what || 'message');
    }

    /** The next message that is not an app-level ping. */
    nextEvent(timeoutMs = 2000) {
        return this.inbox.next(notPing, timeoutMs, 'a non-ping message');
    }

    send(obj) {
        this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
    }

    /** Waits for the close; returns {code, reason}. */
    waitClose(timeoutMs = 3000) {
        return withTimeout(this.closed, timeoutMs, `close of the WebSocket; received ${short(this.all)}`);
    }

    /** Closes (handshake) and waits; falls back to terminate. */
    async close(code = 1000) {
        if (this.ws.readyState === WebSocket.CLOSED) return this.closeInfo;
        try {
            this.ws.close(code);
            return await withTimeout(this.closed, 2000, 'client close');
        } catch {
            this.ws.terminate();
            return withTimeout(this.closed, 2000, 'client terminate').catch(() => null);
        }
    }

    terminate() {
        if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    }
}

function wsQuery(query) {
    const qs = new URLSearchParams(query).toString();
    return qs ? `/ws?${qs}` : '/ws';
}

/**
 * Opens a `ws` client to /ws with `query` (object). Resolves once the `connected` message
 * arrived (client.hello) unless waitConnected is false. Rejects with Refused on an HTTP refusal.
 */
export async function connect(port, query = {}, { waitConnected = true, timeoutMs = 3000, wsOptions = {}, path: p } = {}) {
    const ws = new WebSocket(`ws://${HOST}:${port}${p ?? wsQuery(query)}`, {
        handshakeTimeout: timeoutMs,
        ...wsOptions,
    });
    const c = new WsClient(ws);
    const opened = new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('unexpected-response', (req, res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (s) => (body += s));
            const finish = () => {
                reject(new Refused(res.statusCode, res.headers, body));
                ws.terminate();
            };
            res.on('end', finish);
            res.on('error', finish);
            res.on('aborted', finish);
        });
        ws.once('error', (err) => reject(err));
        ws.once('close', (code) => reject(new Error(`closed before open (code ${code})`)));
    });
    try {
        await withTimeout(opened, timeoutMs + 500, `WebSocket open ${wsQuery(query)}`);
    } catch (err) {
        c.terminate();
        throw err;
    }
    if (waitConnected) {
        try {
            c.hello = await c.next(byType('connected'), timeoutMs, 'the connected message');
        } catch (err) {
            c.terminate();
            throw err;
        }
    }
    return c;
}

/** Expects the upgrade to be refused; resolves the Refused (status, headers, body, json). */
export async function connectRefused(port, query = {}, opts = {}) {
    try {
        const c = await connect(port, query, { ...opts, waitConnected: false });
        c.terminate();
    } catch (err) {
        if (err instanceof Refused) return err;
        throw new Error(`expected an HTTP refusal, got error: ${err.message}`);
    }
    throw new Error(`expected an HTTP refusal of ${JSON.stringify(query)}, but the upgrade succeeded`);
}

/** Two connections of one new user on a daemon with --max-conns-per-user=1: the first is
 * evicted with 4001, the second stays open. */
export async function assertEvictsAtOne(t, port) {
    const user = uid();
    const c1 = closeAfter(t, await connect(port, { user_id: user }));
    const c2 = closeAfter(t, await connect(port, { user_id: user }));
    assert.equal((await c1.waitClose()).code, 4001);
    assert.ok(c2.isOpen);
}

/** Registers cleanup of clients with the node:test context. */
export function closeAfter(t, ...clients) {
    t.after(() => {
        for (const c of clients) c?.terminate?.();
    });
    return clients.length === 1 ? clients[0] : clients;
}

// ------------------------------------------------------------------------------------------
// HTTP over fetch

async function readFetch(res) {
    const text = await res.text();
    let json;
    try {
        json = JSON.parse(text);
    } catch {
        json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
}

/**
 * POST /v1/publish. `body` is JSON-encoded unless it is a string or Buffer (sent as is).
 * Resolves {status, headers, text, json}.
 */
export async function publish(port, body, { key, headers = {}, timeoutMs = 5000 } = {}) {
    const h = { 'content-type': 'application/json', ...headers };
    if (key !== undefined) h.authorization = `Bearer ${key}`;
    const res = await fetch(`http://${HOST}:${port}/v1/publish`, {
        method: 'POST',
        headers: h,
        body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
    });
    return readFetch(res);
}

/** publish() that must succeed with 200; returns the parsed reply. */
export async function publishOk(port, body, opts) {
    const r = await publish(port, body, opts);
    if (r.status !== 200) {
        throw new Error(`publish ${short(body)} expected 200, got ${r.status} ${r.text}`);
    }
    return r.json;
}

/** Any HTTP request via fetch. Resolves {status, headers, text, json}. */
export async function request(port, pathname, { method = 'GET', key, headers = {}, body, timeoutMs = 5000 } = {}) {
    const h = { ...headers };
    if (key !== undefined) h.authorization = `Bearer ${key}`;
    const res = await fetch(`http://${HOST}:${port}${pathname}`, {
        method,
        headers: h,
        body,
        signal: AbortSignal.timeout(timeoutMs),
    });
    return readFetch(res);
}

// ------------------------------------------------------------------------------------------
// Raw TCP: hand-made HTTP

/** Parses one HTTP/1.1 response at the start of buf. Returns {response, rest} or null. */
export function parseResponse(buf, { eof = false } = {}) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const head = buf.subarray(0, end).toString('latin1');
    const [statusLine, ...lines] = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
    if (!m) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    const headers = {};
    const rawHeaders = [];
    for (const line of lines) {
        const i = line.indexOf(':');
        if (i <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
        const k = line.slice(0, i).trim().toLowerCase();
        const v = line.slice(i + 1).trim();
        rawHeaders.push([k, v]);
        headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
    }
    const status = Number(m[1]);
    let bodyStart = end + 4;
    let body;
    let rest;
    if (status === 101 || status === 204 || status === 304) {
        body = Buffer.alloc(0);
        rest = buf.subarray(bodyStart);
    } else if (headers['transfer-encoding'] && /chunked/i.test(headers['transfer-encoding'])) {
        const parts = [];
        let p = bodyStart;
        for (;;) {
            const le = buf.indexOf('\r\n', p);
            if (le < 0) return null;
            const size = parseInt(buf.subarray(p, le).toString('latin1'), 16);
            if (Number.isNaN(size)) throw new Error('bad chunk size');
            if (buf.length < le + 2 + size + 2) return null;
            if (size === 0) {
                const te = buf.indexOf('\r\n\r\n', le);
                if (te < 0 && buf.length < le + 4) return null;
                rest = buf.subarray(te >= 0 ? te + 4 : le + 4);
                break;
            }
            parts.push(buf.subarray(le + 2, le + 2 + size));
            p = le + 2 + size + 2;
        }
        body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        if (buf.length < bodyStart + n) return null;
        body = buf.subarray(bodyStart, bodyStart + n);
        rest = buf.subarray(bodyStart + n);
    } else {
        if (!eof) return null; // body runs to the end of the connection
        body = buf.subarray(bodyStart);
        rest = Buffer.alloc(0);
    }
    const text = body.toString('utf8');
    let json;
    try {
        json = JSON.parse(text);
    } catch {
        json = undefined;
    }
    return { response: { status, reason: m[2] ?? '', headers, rawHeaders, text, json }, rest };
}

/** A raw TCP connection for hand-made HTTP. */
export class RawHttp {
    static connect(port, timeoutMs = 3000) {
        return withTimeout(
            new Promise((resolve, reject) => {
                const sock = net.connect(port, HOST);
                sock.once('connect', () => resolve(new RawHttp(sock)));
                sock.once('error', reject);
            }),
            timeoutMs,
            'TCP connect',
        );
    }

    constructor(sock) {
        this.sock = sock;
        this.buf = Buffer.alloc(0);
        this.eof = false;
        this.error = null;
        this.openedAt = Date.now();
        this.closedAt = null;
        this.wake = () => {};
        sock.on('data', (d) => {
            this.buf = Buffer.concat([this.buf, d]);
            this.wake();
        });
        sock.on('error', (e) => {
            this.error = e;
        });
        this.closed = new Promise((resolve) => {
            sock.on('close', () => {
                this.eof = true;
                this.closedAt = Date.now();
                this.wake();
                resolve(true);
            });
        });
    }

    write(data) {
        return new Promise((resolve) => {
            this.sock.write(data, (err) => resolve(err || null));
        });
    }

    /** Reads the next whole response (keep-alive aware). */
    response(timeoutMs = 3000) {
        const attempt = () => {
            const r = parseResponse(this.buf, { eof: this.eof });
            if (r) {
                this.buf = Buffer.from(r.rest);
                return r.response;
            }
            return null;
        };
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.wake = () => {};
                reject(
                    new Error(
                        `timeout after ${timeoutMs} ms waiting for an HTTP response; have ${JSON.stringify(
                            this.buf.toString('latin1').slice(0, 300),
                        )} eof=${this.eof} error=${this.error?.code ?? ''}`,
                    ),
                );
            }, timeoutMs);
            const check = () => {
                let r;
                try {
                    r = attempt();
                } catch (err) {
                    clearTimeout(timer);
                    this.wake = () => {};
                    reject(err);
                    return;
                }
                if (r) {
                    clearTimeout(timer);
                    this.wake = () => {};
                    resolve(r);
                } else if (this.eof) {
                    clearTimeout(timer);
                    this.wake = () => {};
                    reject(
                        new Error(
                            `connection closed without a complete response; have ${JSON.stringify(
                                this.buf.toString('latin1').slice(0, 300),
                            )} error=${this.error?.code ?? ''}`,
                        ),
                    );
                }
            };
            this.wake = check;
            check();
        });
    }

    /** Resolves true when the peer closed within timeoutMs, false otherwise. */
    async waitClose(timeoutMs = 2000) {
        try {
            await withTimeout(this.closed, timeoutMs, 'close');
            return true;
        } catch {
            return false;
        }
    }

    destroy() {
        this.sock.destroy();
    }
}

/** One raw request: connect, write `data`, read one response, then close our side. */
export async function rawRequest(port, data, { timeoutMs = 3000 } = {}) {
    const c = await RawHttp.connect(port);
    try {
        await c.write(data);
        const res = await c.response(timeoutMs);
        res.closedAfter = await c.waitClose(500);
        return res;
    } finally {
        c.destroy();
    }
}

// ------------------------------------------------------------------------------------------
// Raw TCP: a minimal WebSocket client (never answers pings unless told to)

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A random Sec-WebSocket-Key (base64 of 16 bytes). */
export const wsKey = () => crypto.randomBytes(16).toString('base64');

export function upgradeRequest(target, { key = wsKey(), version = '13', extra = '' } = {}) {
    return (
        `GET ${target} HTTP/1.1\r\n` +
        `Host: ${HOST}\r\n` +
        'Upgrade: websocket\r\n' +
        'Connection: Upgrade\r\n' +
        (key === null ? '' : `Sec-WebSocket-Key: ${key}\r\n`) +
        (version === null ? '' : `Sec-WebSocket-Version: ${version}\r\n`) +
        extra +
        '\r\n'
    );
}

/** Encodes one client frame (masked unless mask:false). */
export function encodeFrame(opcode, payload = Buffer.alloc(0), { fin = true, mask = true, rsv = 0, len } = {}) {
    const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    const n = len ?? data.length;
    let head;
    if (n < 126) {
        head = Buffer.from([0, n]);
    } else if (n < 65536) {
        head = Buffer.alloc(4);
        head[1] = 126;
        head.writeUInt16BE(n, 2);
    } else {
        head = Buffer.alloc(10);
        head[1] = 127;
        head.writeBigUInt64BE(BigInt(n), 2);
    }
    head[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
    if (!mask) return Buffer.concat([head, data]);
    head[1] |= 0x80;
    const key = crypto.randomBytes(4);
    const masked = Buffer.alloc(data.length);
    for (let i = 0; i < data.length; i++) masked[i] = data[i] ^ key[i & 3];
    return Buffer.concat([head, key, masked]);
}

export class RawWs {
    /**
     * Connects, sends the upgrade for `target` (e.g. '/ws?user_id=u1') and checks the 101 and
     * its Sec-WebSocket-Accept. Resolves the client; rejects (with .response) on a refusal.
     */
    static async connect(port, target, { timeoutMs = 3000 } = {}) {
        const http = await RawHttp.connect(port, timeoutMs);
        const key = wsKey();
        await http.write(upgradeRequest(target, { key }));
        let res;
        try {
            res = await http.response(timeoutMs);
        } catch (err) {
            http.destroy();
            throw err;
        }
        if (res.status !== 101) {
            http.destroy();
            const err = new Error(`upgrade refused: HTTP ${res.status} ${res.text}`);
            err.response = res;
            throw err;
        }
        const expect = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
        if (res.headers['sec-websocket-accept'] !== expect) {
            http.destroy();
            throw new Error(`bad Sec-WebSocket-Accept ${res.headers['sec-websocket-accept']}, want ${expect}`);
        }
        return new RawWs(http, res);
    }

    constructor(http, response) {
        this.http = http;
        this.sock = http.sock;
        this.response = response;
        this.closeFrame = null; // {code, reason} of the server's close frame
        this.protocolErrors = [];
        this.inbox = new Inbox(
            () => `frames: ${short(this.inbox.all.map((f) => f.json ?? { op: f.opcode, code: f.code }))} eof=${this.http.eof}`,
        );
        this.buf = Buffer.alloc(0);
        this.fragments = null;
        const pending = http.buf; // bytes that came with the 101
        http.buf = Buffer.alloc(0);
        http.wake = () => {};
        this.sock.removeAllListeners('data');
        this.sock.on('data', (d) => this.feed(d));
        this.closed = http.closed.then(() => {
            this.inbox.end('TCP connection closed');
            return this.closeFrame;
        });
        if (pending.length) this.feed(pending);
    }

    feed(d) {
        this.buf = Buffer.concat([this.buf, d]);
        for (;;) {
            if (this.buf.length < 2) return;
            const b0 = this.buf[0];
            const b1 = this.buf[1];
            let n = b1 & 0x7f;
            let off = 2;
            if (n === 126) {
                if (this.buf.length < 4) return;
                n = this.buf.readUInt16BE(2);
                off = 4;
            } else if (n === 127) {
                if (this.buf.length < 10) return;
                n = Number(this.buf.readBigUInt64BE(2));
                off = 10;
            }
            if (b1 & 0x80) {
                this.protocolErrors.push('server frame is masked');
                off += 4;
            }
            if (this.buf.length < off + n) return;
            const payload = Buffer.from(this.buf.subarray(off, off + n));
            this.buf = this.buf.subarray(off + n);
            this.onFrame({ fin: !!(b0 & 0x80), rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, payload });
        }
    }

    onFrame(f) {
        if (f.rsv) this.protocolErrors.push(`rsv bits ${f.rsv}`);
        if (f.opcode === 0x8) {
            f.code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
            f.reason = f.payload.subarray(2).toString('utf8');
            this.closeFrame = { code: f.code, reason: f.reason };
        } else if (f.opcode === 0x1 || f.opcode === 0x2 || f.opcode === 0x0) {
            // Reassemble fragmented data messages.
            if (f.opcode !== 0x0) this.fragments = { opcode: f.opcode, parts: [] };
            if (!this.fragments) {
                this.protocolErrors.push('continuation without a message');
                return;
            }
            this.fragments.parts.push(f.payload);
            if (!f.fin) return;
            f = { opcode: this.fragments.opcode, fin: true, payload: Buffer.concat(this.fragments.parts) };
            this.fragments = null;
            if (f.opcode === 0x1) {
                f.text = f.payload.toString('utf8');
                try {
                    f.json = JSON.parse(f.text);
                } catch {
                    this.protocolErrors.push(`text frame is not JSON: ${f.text.slice(0, 100)}`);
                }
            }
        }
        this.inbox.push(f);
    }

    /** Parsed JSON messages received so far. */
    get messages() {
        return this.inbox.all.filter((f) => f.json !== undefined).map((f) => f.json);
    }

    /** The next frame matching pred. */
    nextFrame(pred, timeoutMs = 2000, what = 'frame') {
        return this.inbox.next(pred, timeoutMs, what);
    }

    /** The next JSON message matching pred (a message predicate). */
    async next(pred = () => true, timeoutMs = 2000, what = 'message') {
        const f = await this.inbox.next((fr) => fr.json !== undefined && pred(fr.json), timeoutMs, what);
        return f.json;
    }

    /** Waits for the server's close frame; returns {code, reason}. */
    async nextClose(timeoutMs = 3000) {
        const f = await this.inbox.next((fr) => fr.opcode === 0x8, timeoutMs, 'a close frame');
        return { code: f.code, reason: f.reason };
    }

    sendFrame(opcode, payload, opts) {
        return this.http.write(encodeFrame(opcode, payload, opts));
    }

    sendText(s) {
        return this.sendFrame(0x1, Buffer.from(s, 'utf8'));
    }

    sendJson(o) {
        return this.sendText(JSON.stringify(o));
    }

    sendPong(payload = Buffer.alloc(0)) {
        return this.sendFrame(0xa, payload);
    }

    sendClose(code = 1000, reason = '') {
        const p = Buffer.alloc(2 + Buffer.byteLength(reason));
        p.writeUInt16BE(code, 0);
        p.write(reason, 2);
        return this.sendFrame(0x8, p);
    }

    write(bytes) {
        return this.http.write(bytes);
    }

    /** Resolves true when the TCP connection closed within timeoutMs. */
    waitEnd(timeoutMs = 3000) {
        return this.http.waitClose(timeoutMs);
    }

    destroy() {
        this.http.destroy();
    }

    terminate() {
        this.destroy();
    }
}

// ------------------------------------------------------------------------------------------
// JWT (HS256) for the jwt-mode tests

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** A compact JWS signed with HMAC-SHA256 under `secret` (header overridable). */
export function makeJwt(payload, secret, header = { alg: 'HS256', typ: 'JWT' }) {
    const h = b64url(JSON.stringify(header));
    const p = b64url(JSON.stringify(payload));
    const sig = crypto.createHmac('sha256', secret).update(`${h}.${p}`).digest();
    return `${h}.${p}.${b64url(sig)}`;
}

export const nowS = () => Math.floor(Date.now() / 1000);

// ------------------------------------------------------------------------------------------
// Assertions shared by many tests

/** Asserts that an HTTP result (fetch, raw or Refused) is `status` with a JSON {"error": string} body. */
export function assertJsonError(assert, res, status, error) {
    const ctx = `HTTP ${res.status} body ${JSON.stringify(res.text ?? res.body)}`;
    assert.equal(res.status, status, ctx);
    assert.ok(res.json !== null && typeof res.json === 'object' && !Array.isArray(res.json), `error body is a JSON object: ${ctx}`);
    assert.equal(typeof res.json.error, 'string', `error body has an "error" string: ${ctx}`);
    assert.ok(res.json.error.length > 0, `error string is not empty: ${ctx}`);
    if (error instanceof RegExp) assert.match(res.json.error, error, ctx);
    else if (error !== undefined) assert.equal(res.json.error, error, ctx);
}

/** Waits `ms`, then returns the messages of client `c` that are not connected/ping. */
export async function settleUnexpected(c, ms = 200) {
    await sleep(ms);
    return c.all.filter((m) => m.type !== 'connected' && m.type !== 'ping');
}
