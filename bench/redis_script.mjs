// The Redis side of a publish on its own: loads a publish script (src/broker/redis.lua by
// default) into a redis-server, registers USERS users with 2 connections each (2 live nodes),
// subscribes 2 connections to every user's channel (drained, like 2 nodes), then sends
// EVENTS events in EVALSHA calls of BATCH events (WINDOW calls in flight), each call naming
// random users, BURST consecutive events per user. Prints Redis's CPU (INFO) per event, in all and user/kernel.
// Used by scripts/redis_callgrind.sh (instructions per event); bench/README.md has the figures.
//
//   node bench/redis_script.mjs --port P [--script F] [--events N] [--burst K] [--layout 2|4x|4|10] [--fcall]
//       [--history-size N (1000; small: every list trimmed, the steady state)]
//
// --layout picks the arguments sent, for before/after comparisons: 2 (the default) the plain
// path of today's script (2 fields per event: user, envelope with a NUL where the seq goes;
// each user's events together), 4x today's general path (4 fields per event, the path events
// with a run, an idempotency key or a direct connection take), 4 the script before the plain
// path (git show 7823424:src/broker/redis.lua), 10 the script before commit d0311d1
// (git show e2d89df:src/broker/redis.lua).
import fs from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
    options: {
        port: { type: 'string' },
        script: { type: 'string', default: new URL('../src/broker/redis.lua', import.meta.url).pathname },
        events: { type: 'string', default: '100000' },
        burst: { type: 'string', default: '1' },
        layout: { type: 'string', default: '2' },
        fcall: { type: 'boolean', default: false },
        'history-size': { type: 'string', default: '1000' },
    },
});
const PORT = Number(o.port);
const EVENTS = Number(o.events);
const BURST = Number(o.burst);
const USERS = 2000;
const BATCH = 100;
const WINDOW = 10;
const P = 'rs:';
if (!PORT || EVENTS % BATCH !== 0 || !(BURST >= 1) || !['2', '4x', '4', '10'].includes(o.layout)) {
    console.error('usage: node bench/redis_script.mjs --port P [--script F] [--events N (a multiple of 100)] [--burst K] [--layout 2|4x|4|10] [--fcall] [--history-size N]');
    process.exit(2);
}

function encode(args) {
    const parts = [Buffer.from(`*${args.length}\r\n`)];
    for (const a of args) {
        const b = Buffer.from(String(a));
        parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
    }
    return Buffer.concat(parts);
}

/** One RESP value at b[o]: {v, off} or null when incomplete. */
function parse(b, o) {
    if (o >= b.length) return null;
    const e = b.indexOf('\r\n', o);
    if (e < 0) return null;
    const t = String.fromCharCode(b[o]);
    const line = b.subarray(o + 1, e).toString();
    const n = e + 2;
    if (t === '+') return { v: line, off: n };
    if (t === '-') return { v: new Error(line), off: n };
    if (t === ':') return { v: Number(line), off: n };
    if (t === '$') {
        const l = Number(line);
        if (l < 0) return { v: null, off: n };
        if (b.length < n + l + 2) return null;
        return { v: b.subarray(n, n + l).toString(), off: n + l + 2 };
    }
    if (t === '*') {
        const a = [];
        let p = n;
        for (let i = 0; i < Number(line); i++) {
            const r = parse(b, p);
            if (!r) return null;
            a.push(r.v);
            p = r.off;
        }
        return { v: a, off: p };
    }
    throw new Error(`RESP type ${t}`);
}

function client() {
    const s = net.connect(PORT, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const waiting = [];
    s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
            const r = parse(buf, 0);
            if (!r) break;
            buf = buf.subarray(r.off);
            waiting.shift()?.(r.v);
        }
    });
    s.on('error', (err) => {
        console.error(`redis: ${err.message}`);
        process.exit(1);
    });
    return (args) =>
        new Promise((resolve) => {
            waiting.push(resolve);
            s.write(encode(args));
        });
}

const cmd = client();
await cmd(['FLUSHALL']);
// --fcall: the same script as a Redis 7 function (FUNCTION LOAD, FCALL) instead of EVALSHA
const text = fs.readFileSync(o.script, 'utf8');
const sha = o.fcall
    ? await cmd(['FUNCTION', 'LOAD', 'REPLACE', `#!lua name=agentcast_bench\nredis.register_function('agentcast_bench', function(KEYS, ARGV)\n${text}\nend)`])
    : await cmd(['SCRIPT', 'LOAD', text]);
if (sha instanceof Error) {
    console.error(`loading the script: ${sha.message}`);
    process.exit(1);
}
await cmd(['SET', `${P}n:node1`, '1']);
await cmd(['SET', `${P}n:node2`, '1']);
const users = Array.from({ length: USERS }, (_, i) => `user-${i}`);
for (const u of users) await cmd(['ZADD', `${P}k:${u}`, '1', '0000000000000001@node1', '2', '0000000000000002@node2']);
if (o.layout === '2') for (const u of users) await cmd(['HSET', `${P}reg`, u, 'node1000001 node2000001']); // the registry's counts (plain path)
const subs = [];
for (let k = 0; k < 2; k++) {
    const s = net.connect(PORT, '127.0.0.1');
    s.on('data', () => {});
    s.write(encode(['SUBSCRIBE', ...users.map((u) => `${P}c:${u}`)]));
    subs.push(s);
}
await cmd(['PING']);
await new Promise((r) => setTimeout(r, 300));

const head = '{"type":"chunk","seq":';
const tail = ',"user_id":"user","run_id":null,"thread_id":null,"timestamp":"2026-12-07T02:00:00.000Z","data":{"text":"a chunk of an answer, about as long as a sentence"}}';
function batch() {
    const a = o.fcall ? ['FCALL', 'agentcast_bench', '0', 'pub', P] : ['EVALSHA', sha, '0', 'pub', P];
    if (o.layout !== '10') a.push(''); // the Redis Cluster tag L (ARGV[3]), none on a shard
    a.push(o['history-size'], '600000', '600000', 'abcd1234', '1200000', String(BATCH));
    if (o.layout !== '10') a.push('604800000');
    if (o.layout === '2' || o.layout === '4x') a.push(o.layout === '2' ? 'p' : 'x'); // the path
    let u;
    for (let i = 0; i < BATCH; i++) {
        if (i % BURST === 0) u = users[Math.floor(Math.random() * USERS)];
        if (o.layout === '2') a.push(u, head + '\0' + tail);
        else if (o.layout !== '10') a.push(u, head, tail, '');
        else a.push(u, 'other', '', '', '', '', head, tail, '', '0');
    }
    return a;
}
const cpu = async () => {
    const s = await cmd(['INFO', 'cpu']);
    return [Number(/used_cpu_user:([\d.]+)/.exec(s)[1]), Number(/used_cpu_sys:([\d.]+)/.exec(s)[1])];
};
const calls = EVENTS / BATCH;
const cpu0 = await cpu();
const t0 = Date.now();
let sent = 0;
let done = 0;
await new Promise((resolve) => {
    const pump = () => {
        while (sent - done < WINDOW && sent < calls) {
            sent++;
            cmd(batch()).then((r) => {
                if (!Array.isArray(r) || r[0] !== 'OK') {
                    console.error(`unexpected reply: ${r}`);
                    process.exit(1);
                }
                done++;
                if (done === calls) resolve();
                else pump();
            });
        }
    };
    pump();
});
const cpu1 = await cpu();
const us = (a, b) => Number((((a - b) / EVENTS) * 1e6).toFixed(2));
console.log(JSON.stringify({
    events: EVENTS,
    burst: BURST,
    history_size: Number(o['history-size']),
    redis_cpu_us_per_event: us(cpu1[0] + cpu1[1], cpu0[0] + cpu0[1]),
    user_us: us(cpu1[0], cpu0[0]),
    sys_us: us(cpu1[1], cpu0[1]),
    wall_s: (Date.now() - t0) / 1000,
}));
for (const s of subs) s.destroy();
process.exit(0);
