// Helpers for the client tests: start/stop the real daemon on 127.0.0.1 port 0, publish over
// fetch, and record what a client announces. Every wait is bounded, so a test can fail but
// never hang. (No tests here: it lives outside test/ so that `node --test clients/js/test/` does not count it.)

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
// The client does not depend on `ws`; the tests inject it (Node 20 has no global WebSocket).
import WebSocket from '../../tests/node_modules/ws/index.js';

export { WebSocket };

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.AGENTCAST_BIN || path.join(REPO, 'build', 'agentcastd');
export const HOST = '127.0.0.1';

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

/** Polls `fn` until it returns a truthy value; returns it, or throws after `ms`. */
export async function waitFor(fn, ms, what, every = 10) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms: ${what}`);
        await sleep(every);
    }
}

const running = new Set();
process.on('exit', () => {
    for (const p of running) {
        try {
            p.kill('SIGKILL');
        } catch {
            /* gone */
        }
    }
});

/**
 * Starts the daemon with `--listen 127.0.0.1:0 --auth=none` plus `args` (or on `port`, to
 * restart one on the same address); resolves when its
 * `event=listening addr=HOST:PORT` line is on stderr. Returns {port, url, wsUrl, logs, stop()}.
 */
export async function startDaemon(args = [], { port: listenPort = 0 } = {}) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTCAST_')) env[k] = v;
    const proc = spawn(BIN, ['--listen', `${HOST}:${listenPort}`, '--auth=none', ...args], {
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
    });
    running.add(proc);
    const logs = [];
    const exited = new Promise((resolve) =>
        proc.on('exit', (code, signal) => {
            running.delete(proc);
            resolve({ code, signal });
        }),
    );
    let partial = '';
    const port = await withTimeout(
        new Promise((resolve, reject) => {
            proc.on('error', reject);
            proc.stderr.setEncoding('utf8');
            proc.stderr.on('data', (s) => {
                partial += s;
                let i;
                while ((i = partial.indexOf('\n')) >= 0) {
                    const line = partial.slice(0, i);
                    partial = partial.slice(i + 1);
                    logs.push(line);
                    const m = /event=listening\b.*\baddr=[0-9.]+:(\d+)/.exec(line);
                    if (m) resolve(Number(m[1]));
                }
            });
            exited.then(({ code, signal }) => reject(new Error(`daemon exited (code=${code} signal=${signal}): ${logs.join('\n')}`)));
        }),
        5000,
        'daemon event=listening',
    ).catch((err) => {
        proc.kill('SIGKILL');
        throw err;
    });
    let stopping = null;
    return {
        port,
        logs,
        url: `http://${HOST}:${port}`,
        wsUrl: `ws://${HOST}:${port}/ws`,
        /** SIGTERM, then SIGKILL after 3 s; resolves {code, signal}. */
        stop() {
            if (stopping) return stopping;
            stopping = (async () => {
                if (proc.exitCode !== null || proc.signalCode !== null) return exited;
                proc.kill('SIGTERM');
                try {
                    return await withTimeout(exited, 3000, 'daemon exit');
                } catch {
                    proc.kill('SIGKILL');
                    return withTimeout(exited, 3000, 'daemon exit after SIGKILL');
                }
            })();
            return stopping;
        },
    };
}

/** Starts a daemon stopped by the test's after(). */
export async function daemonFor(t, args = []) {
    const d = await startDaemon(args);
    t.after(() => d.stop());
    return d;
}

/** POST /v1/publish; asserts 200 and returns the reply. */
export async function publish(d, body) {
    const res = await withTimeout(
        fetch(`${d.url}/v1/publish`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(body),
        }),
        3000,
        'publish',
    );
    const json = await res.json();
    assert.equal(res.status, 200, `publish ${JSON.stringify(body).slice(0, 200)}: ${JSON.stringify(json)}`);
    return json;
}

/** Publishes `n` events of type `ev` ({i}) for `user` in one array; returns the seqs. */
export async function publishMany(d, user, n, from = 0) {
    const body = [];
    for (let i = 0; i < n; i++) body.push({ user_id: user, type: 'ev', data: { i: from + i } });
    const r = await publish(d, body);
    return r.map((x) => x.seq);
}

/** GET /v1/stats. */
export async function stats(d) {
    const res = await withTimeout(fetch(`${d.url}/v1/stats`), 3000, 'stats');
    return res.json();
}

/**
 * Records everything a client announces: `states`, `events` ('*'), `errors`, `resyncs`, `runs`.
 * `until(pred, ms, what)` waits for `pred(rec)` to hold.
 */
export function record(client) {
    const rec = { states: [], events: [], errors: [], resyncs: [], runs: [] };
    client.on('state', (s) => rec.states.push(s));
    client.on('*', (e) => rec.events.push(e));
    client.on('error', (e) => rec.errors.push(e));
    client.on('resync', (r) => rec.resyncs.push(r));
    client.on('run', (r) => rec.runs.push(r));
    rec.until = (pred, ms = 3000, what = 'condition') => waitFor(() => pred(rec), ms, what);
    rec.stateNames = () => rec.states.map((s) => s.state);
    rec.seqs = () => rec.events.filter((e) => e.seq !== undefined).map((e) => e.seq);
    rec.connected = (n = 1, ms = 3000) =>
        rec.until((r) => r.states.filter((s) => s.state === 'connected').length >= n, ms, `${n} x state connected`);
    return rec;
}

/** Closes the client after the test. */
export function closeAfter(t, client) {
    t.after(() => client.close());
    return client;
}

/** [1, 2, ..., n] shifted to start at `from`. */
export function range(from, to) {
    const out = [];
    for (let i = from; i <= to; i++) out.push(i);
    return out;
}

/**
 * A `token` callback that can hold the client's next connection attempt until release():
 * the daemon (--auth=none) ignores the token, so this only makes reconnect timing
 * deterministic, through the public API.
 */
export function gate() {
    let held = null;
    return {
        token: () => (held ? held.promise : 'unused'),
        hold() {
            let resolve;
            const promise = new Promise((r) => (resolve = r));
            held = { promise, resolve };
        },
        release() {
            const h = held;
            held = null;
            if (h) h.resolve('unused');
        },
    };
}

/** A scriptable stand-in for the browser WebSocket API (the client's tests of what the real daemon never does). */
export class FakeSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 3;
    /** @type {FakeSocket[]} */
    static made = [];
    constructor(url) {
        this.url = new URL(url);
        this.readyState = 0;
        this.sent = [];
        this.listeners = { open: [], message: [], error: [], close: [] };
        FakeSocket.made.push(this);
    }
    addEventListener(type, fn) {
        this.listeners[type].push(fn);
    }
    fire(type, ev) {
        for (const fn of this.listeners[type]) fn(ev);
    }
    send(data) {
        if (this.readyState !== 1) throw new Error('not open');
        this.sent.push(data);
    }
    close(code = 1005, reason = '') {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.fire('close', { code, reason }), 0);
    }
    // Server side
    open() {
        this.readyState = 1;
        this.fire('open', {});
    }
    msg(obj) {
        this.fire('message', { data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
    }
    connected(lastSeq, { epoch = 'E1', recovered = false, id = 'c1', user = 'u1' } = {}) {
        this.open();
        this.msg({ type: 'connected', user_id: user, data: { connection_id: id, last_seq: lastSeq, epoch, recovered } });
    }
    drop(code, reason = '') {
        this.readyState = 3;
        this.fire('close', { code, reason });
    }
}

/** A fresh fake class per test, so that `made` is per test. */
export function fakeClass() {
    return class extends FakeSocket {
        static made = [];
        constructor(url) {
            super(url);
            this.constructor.made.push(this);
        }
    };
}
