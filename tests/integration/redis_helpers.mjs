// Helpers for the cluster tests (--broker=redis://...): a real redis-server on a free
// 127.0.0.1 port (no persistence, so a restart comes back empty), a PING over raw TCP, a tiny
// RESP client for inspecting keys, and N agentcastd nodes sharing one Redis under one
// unique --redis-prefix. Built on helpers.mjs (not edited here); every wait is bounded.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { HOST, startDaemon, request, withTimeout, sleep } from './helpers.mjs';
import { dropClients } from './helpers3.mjs';

export const REDIS_BIN = process.env.REDIS_SERVER_BIN || '/usr/bin/redis-server';

/**
 * The reason to skip every cluster test, or false. Only when redis-server is missing AND
 * CI is not set: in CI a missing redis-server must fail the tests, not skip them.
 */
export function redisSkipReason() {
    if (fs.existsSync(REDIS_BIN)) return false;
    if (process.env.CI) return false;
    return `${REDIS_BIN} not found: the cluster tests need redis-server (scripts/deps.sh installs it; apt-get install redis-server)`;
}

/** A port that was free a moment ago on 127.0.0.1 (listen on 0, read it, close). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.once('error', reject);
        srv.listen(0, HOST, () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** Resolves true when something on `port` answers `PING\r\n` with `+PONG` (raw TCP). */
export function pingRedis(port, { timeoutMs = 500, password } = {}) {
    return new Promise((resolve) => {
        const sock = net.connect(port, HOST);
        let buf = '';
        let done = false;
        const finish = (v) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            sock.destroy();
            resolve(v);
        };
        const timer = setTimeout(() => finish(false), timeoutMs);
        sock.setEncoding('utf8');
        sock.on('connect', () => {
            // With requirepass a PING before AUTH is -NOAUTH: answer true only on +PONG.
            if (password !== undefined) sock.write(encodeCommand(['AUTH', password]));
            sock.write('PING\r\n');
        });
        sock.on('data', (s) => {
            buf += s;
            if (buf.includes('+PONG')) finish(true);
            else if (/-(NOAUTH|ERR|LOADING|WRONGPASS)/.test(buf) && buf.endsWith('\r\n') && !buf.startsWith('+OK')) finish(false);
        });
        sock.on('error', () => finish(false));
        sock.on('close', () => finish(false));
    });
}

const runningRedis = new Set();
process.on('exit', () => {
    for (const p of runningRedis) {
        try {
            p.kill('SIGKILL');
        } catch {
            /* already gone */
        }
    }
});

/**
 * A redis-server: `start()` on a free port (another one on a bind collision), `stop()`
 * (SIGTERM, SIGKILL if it lingers), `restart()` on the same port (empty: no persistence),
 * `kill()` (SIGKILL). `url` is redis://127.0.0.1:PORT. `logs` holds its output.
 */
export class RedisServer {
    constructor({ password, extraArgs = [] } = {}) {
        this.password = password;
        this.extraArgs = extraArgs;
        this.port = null;
        this.proc = null;
        this.exited = null;
        this.logs = [];
        this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentcast-redis-'));
        this.starts = 0;
    }

    get url() {
        return `redis://${HOST}:${this.port}`;
    }

    /** The --broker URL naming database `db`. */
    urlFor(db) {
        return `${this.url}/${db}`;
    }

    /** The Redis servers behind the URL (one here; see RedisShards). */
    get shards() {
        return [this];
    }

    get addr() {
        return `${HOST}:${this.port}`;
    }

    /** Spawns redis-server on `port`; resolves true once it answers PING, false if it died (bind failed). */
    async #spawnOn(port, timeoutMs) {
        const args = [
            '--port', String(port),
            '--bind', HOST,
            '--save', '',
            '--appendonly', 'no',
            '--daemonize', 'no',
            '--dir', this.dir,
            '--logfile', '',
            '--loglevel', 'notice',
            ...(this.password !== undefined ? ['--requirepass', this.password] : []),
            ...this.extraArgs,
        ];
        const proc = spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        runningRedis.add(proc);
        this.starts += 1;
        const tag = `redis#${this.starts}:${port}`;
        const onData = (s) => this.logs.push(...String(s).split('\n').filter(Boolean).map((l) => `${tag} ${l}`));
        proc.stdout.on('data', onData);
        proc.stderr.on('data', onData);
        proc.on('error', (err) => this.logs.push(`${tag} spawn error: ${err.message}`));
        const exited = new Promise((resolve) => {
            proc.on('exit', (code, signal) => {
                runningRedis.delete(proc);
                resolve({ code, signal });
            });
        });
        let dead = false;
        exited.then(() => {
            dead = true;
        });
        const deadline = Date.now() + timeoutMs;
        while (Date.now() < deadline && !dead) {
            if (await pingRedis(port, { password: this.password })) {
                this.proc = proc;
                this.exited = exited;
                this.port = port;
                return true;
            }
            await sleep(25);
        }
        if (!dead) {
            proc.kill('SIGKILL');
            await withTimeout(exited, 3000, 'redis-server exit after SIGKILL').catch(() => {});
            throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms; logs:\n${this.logs.join('\n')}`);
        }
        return false;
    }

    /** Starts on a free port (retrying on a collision). */
    async start({ timeoutMs = 5000 } = {}) {
        for (let attempt = 0; attempt < 6; attempt++) {
            const port = await freePort();
            if (await this.#spawnOn(port, timeoutMs)) return this;
        }
        throw new Error(`redis-server could not start on a free port after 6 attempts; logs:\n${this.logs.join('\n')}`);
    }

    /** Starts again on the same port (after stop/kill); the data set is empty. */
    async restart({ timeoutMs = 5000 } = {}) {
        if (this.proc) await this.stop();
        const port = this.port;
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            if (await this.#spawnOn(port, Math.max(500, deadline - Date.now()))) return this;
            if (Date.now() > deadline) {
                throw new Error(`redis-server could not restart on port ${port}; logs:\n${this.logs.join('\n')}`);
            }
            await sleep(100); // the port is still held: try again
        }
    }

    /** SIGTERM, then SIGKILL when it has not exited after killAfterMs. */
    async stop({ killAfterMs = 3000 } = {}) {
        const proc = this.proc;
        if (!proc) return null;
        this.proc = null;
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
        try {
            return await withTimeout(this.exited, killAfterMs, 'redis-server exit');
        } catch {
            proc.kill('SIGKILL');
            return withTimeout(this.exited, 3000, 'redis-server exit after SIGKILL').catch(() => null);
        }
    }

    /** SIGKILL at once. */
    async kill() {
        const proc = this.proc;
        if (!proc) return null;
        this.proc = null;
        proc.kill('SIGKILL');
        return withTimeout(this.exited, 3000, 'redis-server exit after SIGKILL').catch(() => null);
    }

    /** Stops and removes its directory. */
    async dispose() {
        await this.stop();
        fs.rmSync(this.dir, { recursive: true, force: true });
    }

    /** One command over RESP (see redisCommand), authenticated when the server has a password. */
    command(args, opts = {}) {
        return redisCommand(this.port, args, { password: this.password, ...opts });
    }
}

/**
 * Several redis-servers behind one comma-separated --broker URL (shards), with the
 * RedisServer interface where it makes sense for all of them at once: start, stop, restart,
 * kill, dispose act on every shard; `shards` lists them in URL order.
 */
export class RedisShards {
    constructor(n, opts = {}) {
        this.password = opts.password;
        this.list = Array.from({ length: n }, () => new RedisServer(opts));
    }

    get shards() {
        return this.list;
    }

    get url() {
        return this.list.map((r) => r.url).join(',');
    }

    urlFor(db) {
        return this.list.map((r) => r.urlFor(db)).join(',');
    }

    async start(opts) {
        for (const r of this.list) await r.start(opts);
        return this;
    }

    async restart(opts) {
        await Promise.all(this.list.map((r) => r.restart(opts)));
        return this;
    }

    async stop(opts) {
        return Promise.all(this.list.map((r) => r.stop(opts)));
    }

    async kill() {
        return Promise.all(this.list.map((r) => r.kill()));
    }

    async dispose() {
        await Promise.all(this.list.map((r) => r.dispose()));
    }

    get logs() {
        return this.list.flatMap((r) => r.logs);
    }
}

/**
 * How many Redis shards the cluster tests run on: AGENTCAST_TEST_SHARDS (default 1; the
 * two-shard variant of the cluster suite sets 2).
 */
export function testShards() {
    const n = Number(process.env.AGENTCAST_TEST_SHARDS || 1);
    return Number.isInteger(n) && n >= 1 ? n : 1;
}

/** A new, not yet started RedisServer, or RedisShards when the tests run on several. */
export function newRedis(opts, n = testShards()) {
    return n > 1 ? new RedisShards(n, opts) : new RedisServer(opts);
}

/** A started RedisServer (or RedisShards, see testShards), disposed after the test `t`. */
export async function redisFor(t, opts, n = testShards()) {
    const r = newRedis(opts, n);
    await r.start();
    t.after(() => r.dispose());
    return r;
}

/**
 * The shard index (0..n-1) the daemon picks for `user` among n shards: FNV-1a 64 of the
 * id's UTF-8 bytes, then the jump consistent hash (src/broker/redis_uv.c).
 */
export function shardOf(user, n) {
    const MASK = (1n << 64n) - 1n;
    let h = 0xcbf29ce484222325n;
    for (const byte of Buffer.from(user, 'utf8')) {
        h ^= BigInt(byte);
        h = (h * 0x100000001b3n) & MASK;
    }
    let b = -1;
    let j = 0;
    while (j < n) {
        b = j;
        h = (h * 2862933555777941757n + 1n) & MASK;
        j = Math.floor((b + 1) * (2 ** 31 / Number((h >> 33n) + 1n)));
    }
    return b;
}

/** A fresh user id (made by `make`, called with a counter) whose shard among n is `shard`. */
export function userOnShard(make, shard, n) {
    for (let i = 0; i < 10000; i++) {
        const u = make(i);
        if (n === 1 || shardOf(u, n) === shard) return u;
    }
    throw new Error(`no user id on shard ${shard} of ${n} in 10,000 tries`);
}

/** Every key matching `pattern` on every shard of `redis` (a RedisServer or RedisShards). */
export async function redisKeysAll(redis, pattern, opts = {}) {
    const all = [];
    for (const r of redis.shards) all.push(...(await redisKeys(r.port, pattern, opts)));
    return all;
}

// ------------------------------------------------------------------------------------------
// A minimal RESP client (for inspecting keys; the daemon is the thing under test)

export function encodeCommand(args) {
    let s = `*${args.length}\r\n`;
    for (const a of args) {
        const b = Buffer.from(String(a), 'utf8');
        s += `$${b.length}\r\n${b.toString('utf8')}\r\n`;
    }
    return s;
}

/** Parses one RESP value at buf[off]; returns {value, off} or null when incomplete. */
function parseResp(buf, off = 0) {
    if (off >= buf.length) return null;
    const le = buf.indexOf('\r\n', off);
    if (le < 0) return null;
    const kind = String.fromCharCode(buf[off]);
    const line = buf.subarray(off + 1, le).toString('utf8');
    const next = le + 2;
    switch (kind) {
        case '+':
            return { value: line, off: next };
        case '-':
            return { value: new RedisError(line), off: next };
        case ':':
            return { value: Number(line), off: next };
        case '$': {
            const n = Number(line);
            if (n < 0) return { value: null, off: next };
            if (buf.length < next + n + 2) return null;
            return { value: buf.subarray(next, next + n).toString('utf8'), off: next + n + 2 };
        }
        case '*': {
            const n = Number(line);
            if (n < 0) return { value: null, off: next };
            const arr = [];
            let p = next;
            for (let i = 0; i < n; i++) {
                const r = parseResp(buf, p);
                if (!r) return null;
                arr.push(r.value);
                p = r.off;
            }
            return { value: arr, off: p };
        }
        default:
            throw new Error(`RESP: unexpected type byte ${JSON.stringify(kind)}`);
    }
}

export class RedisError extends Error {}

/**
 * Sends commands (each an array of strings) on one fresh connection and resolves their
 * replies in order (RedisError objects for error replies). `password` sends AUTH first and
 * `db` SELECT (their replies are not returned).
 */
export function redisPipeline(port, commands, { password, db, timeoutMs = 3000 } = {}) {
    const pre = [];
    if (password !== undefined) pre.push(['AUTH', password]);
    if (db !== undefined) pre.push(['SELECT', String(db)]);
    const all = [...pre, ...commands];
    return withTimeout(
        new Promise((resolve, reject) => {
            const sock = net.connect(port, HOST);
            let buf = Buffer.alloc(0);
            const replies = [];
            sock.on('connect', () => sock.write(all.map(encodeCommand).join('')));
            sock.on('data', (d) => {
                buf = Buffer.concat([buf, d]);
                try {
                    for (;;) {
                        const r = parseResp(buf, 0);
                        if (!r) break;
                        replies.push(r.value);
                        buf = buf.subarray(r.off);
                    }
                } catch (err) {
                    sock.destroy();
                    reject(err);
                    return;
                }
                if (replies.length >= all.length) {
                    sock.end();
                    const head = replies.slice(0, pre.length).find((v) => v instanceof RedisError);
                    if (head) reject(head);
                    else resolve(replies.slice(pre.length));
                }
            });
            sock.on('error', reject);
            sock.on('close', () => reject(new Error(`redis connection closed after ${replies.length}/${all.length} replies`)));
        }),
        timeoutMs,
        `redis ${commands.map((c) => c[0]).join(',')}`,
    );
}

/** One command; resolves its reply, rejects on an error reply. */
export async function redisCommand(port, args, opts = {}) {
    const [v] = await redisPipeline(port, [args], opts);
    if (v instanceof RedisError) throw v;
    return v;
}

/** Every key matching `pattern` (SCAN, so it never blocks the server for long). */
export async function redisKeys(port, pattern, opts = {}) {
    const keys = [];
    let cursor = '0';
    for (let i = 0; i < 10000; i++) {
        const [next, batch] = await redisCommand(port, ['SCAN', cursor, 'MATCH', pattern, 'COUNT', '1000'], opts);
        keys.push(...batch);
        cursor = next;
        if (cursor === '0') break;
    }
    return keys;
}

// ------------------------------------------------------------------------------------------
// Cluster nodes

let prefixCounter = 0;
/** A --redis-prefix no other test (in this or any concurrent test process) uses. */
export function uniquePrefix(tag = 't') {
    prefixCounter += 1;
    return `actest-${process.pid}-${Date.now().toString(36)}-${prefixCounter}-${tag}:`;
}

/**
 * The arguments of one node of a cluster on `redis` under `prefix` (auth none), plus `extra`.
 * `brokerForm`: 'eq' (--broker=URL), 'space' (--broker URL) or 'env' (AGENTCAST_BROKER; the
 * caller passes nodeEnv(...)).
 */
export function nodeArgs(redis, prefix, extra = [], { brokerForm = 'eq', db } = {}) {
    const url = db === undefined ? redis.url : redis.urlFor(db);
    const broker = brokerForm === 'eq' ? [`--broker=${url}`] : brokerForm === 'space' ? ['--broker', url] : [];
    return [...broker, `--redis-prefix=${prefix}`, '--auth=none', ...extra];
}

/**
 * Starts `n` nodes on one Redis under one prefix (a fresh one unless given), each waited for
 * until /healthz is 200 (unless waitReady is false). Each node is a
 * startDaemon() result; the test's after-hook first terminates every client handed to
 * cluster.own(c), then stops the nodes (a node already killed by the test is fine).
 * Resolves {prefix, nodes, own}.
 */
export async function clusterFor(t, redis, n, { prefix = uniquePrefix(), extra = [], env = {}, perNode = [], waitReady = true } = {}) {
    const nodes = [];
    const clients = [];
    const own = (c) => {
        clients.push(c);
        return c;
    };
    t.after(async () => {
        dropClients(clients);
        const errors = [];
        for (const d of nodes) {
            if (d.killedByTest) continue;
            try {
                await d.stop();
            } catch (err) {
                errors.push(err);
            }
        }
        if (errors.length) throw errors[0];
    });
    for (let i = 0; i < n; i++) {
        const o = perNode[i] || {};
        const args = nodeArgs(redis, prefix, [...extra, ...(o.extra || [])], o);
        const nodeEnv = { ...env, ...(o.env || {}) };
        if (redis.password !== undefined && nodeEnv.AGENTCAST_REDIS_PASSWORD === undefined) {
            nodeEnv.AGENTCAST_REDIS_PASSWORD = redis.password;
        }
        const d = await startDaemon(args, nodeEnv, { startTimeoutMs: 8000 });
        d.name = String.fromCharCode(65 + i); // A, B, C...
        nodes.push(d);
        if (waitReady) {
            // A node may log `listening` a moment before its broker connection is up (the
            // readiness test in cluster.test.mjs checks that separately): the other tests
            // start from a node that answers /healthz 200.
            const deadline = Date.now() + 5000;
            for (;;) {
                const h = await healthz(d.port).catch((err) => ({ status: 0, text: err.message }));
                if (h.status === 200) break;
                if (Date.now() > deadline) {
                    throw new Error(`node ${d.name}: /healthz not 200 within 5 s of listening: ${h.status} ${h.text}\nlogs:\n${d.logs.join('\n')}`);
                }
                await sleep(10);
            }
        }
    }
    return { prefix, nodes, own };
}

/** SIGKILL a node (the cluster's after-hook will not stop it again). */
export async function killNode(d) {
    d.killedByTest = true;
    d.proc.kill('SIGKILL');
    return withTimeout(d.exited, 5000, 'node exit after SIGKILL');
}

/** GET /healthz: {status, json}. */
export async function healthz(port) {
    const r = await request(port, '/healthz', { timeoutMs: 3000 });
    return { status: r.status, json: r.json, text: r.text };
}
