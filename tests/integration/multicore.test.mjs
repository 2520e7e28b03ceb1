// --threads 4: users sharded across event loops. A user's connections accepted by different
// loops end on the loop that owns the user and get every event once, in seq order; the
// per-user cap evicts the oldest across loops; one publish array naming users of every loop
// is answered in order, all or nothing; /v1/stats shows each loop. (The whole suite also
// runs at AGENTCAST_THREADS=4 in `make test`.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { daemonFor, connect, closeAfter, publish, publishOk, settleUnexpected, uid, waitFor, HOST, CRITICAL } from './helpers.mjs';
import { agentSocket } from './helpers3.mjs';

const LOOPS = 4;
const ARGS = ['--auth', 'none', '--threads', String(LOOPS)];

/** The daemon's owner of a user: FNV-1a of the id, modulo the loops (net/group.c). */
function ownerOf(user, n = LOOPS) {
    let h = 2166136261;
    for (const b of Buffer.from(user)) {
        h ^= b;
        h = Math.imul(h, 16777619) >>> 0;
    }
    return h % n;
}

/** A new user id owned by loop k. */
function userOn(k, prefix = 'm') {
    for (;;) {
        const u = uid(prefix);
        if (ownerOf(u) === k) return u;
    }
}

/** /v1/stats over one kept-alive socket, so reading it accepts nothing after the first. */
function statsReader(t, port) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    return () =>
        new Promise((resolve, reject) => {
            const req = http.get({ host: HOST, port, path: '/v1/stats', agent, timeout: 5000 }, (res) => {
                let body = '';
                res.setEncoding('utf8');
                res.on('data', (s) => (body += s));
                res.on('end', () => resolve(JSON.parse(body)));
                res.on('error', reject);
            });
            req.on('error', reject);
            req.on('timeout', () => req.destroy(new Error('stats timed out')));
        });
}

/** The loop whose `accepted` count grew between two stats (exactly one must have). */
function acceptedOn(before, after) {
    const grew = after.loops.map((l, k) => l.accepted - before.loops[k].accepted);
    assert.equal(grew.reduce((a, b) => a + b, 0), 1, `one accept between the reads: ${grew}`);
    return grew.findIndex((g) => g === 1);
}

const seqsOf = (c) => c.all.filter((m) => typeof m.seq === 'number').map((m) => m.seq);

test('a user\'s three connections accepted by different loops move to the owner loop and get every event once, in seq order', async (t) => {
    const d = await daemonFor(t, ARGS);
    const stats = statsReader(t, d.port);
    const user = uid('multi');
    const owner = ownerOf(user);
    const conns = [];
    const acceptors = [];
    let s = await stats();
    assert.equal(s.loops.length, LOOPS);
    // The kernel picks the accepting loop (SO_REUSEPORT): reconnect until two loops took part.
    for (let attempt = 0; attempt < 40 && (conns.length < 3 || new Set(acceptors).size < 2); attempt++) {
        if (conns.length === 3) {
            conns.shift().terminate();
            acceptors.shift();
            await settleUnexpected(conns[0], 50);
        }
        conns.push(closeAfter(t, await connect(d.port, { user_id: user })));
        const next = await stats();
        acceptors.push(acceptedOn(s, next));
        s = next;
    }
    assert.equal(conns.length, 3);
    assert.ok(new Set(acceptors).size >= 2, `accepted on loops ${acceptors}`);
    s = await stats();
    assert.equal(s.loops[owner].connections, 3, `all three on the owner loop ${owner}: ${JSON.stringify(s.loops)}`);
    assert.equal(s.total_connections, 3);
    assert.ok(s.handoffs_total >= 1, 'a connection was handed to the owner');

    const N = 60;
    for (let i = 0; i < N; i += 10) {
        const batch = [];
        for (let j = i; j < i + 10; j++) batch.push({ user_id: user, type: 'note', data: { i: j } });
        await publishOk(d.port, batch);
    }
    const want = Array.from({ length: N }, (_, i) => i + 1);
    for (const c of conns) {
        await c.next((m) => m.seq === N, 5000, `seq ${N}`);
        assert.deepEqual(seqsOf(c), want, 'every event once, in order');
        assert.deepEqual(
            c.all.filter((m) => typeof m.seq === 'number').map((m) => m.data.i),
            want.map((x) => x - 1),
        );
    }
});

test('the per-user cap evicts the oldest connection across loops (4001), the newest three stay', async (t) => {
    const d = await daemonFor(t, [...ARGS, '--max-conns-per-user', '3']);
    const user = uid('cap');
    const c = [];
    for (let i = 0; i < 4; i++) c.push(closeAfter(t, await connect(d.port, { user_id: user })));
    assert.equal((await c[0].waitClose()).code, 4001);
    for (const x of c.slice(1)) assert.ok(x.isOpen);
    const r = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(r.delivered, 3);
    const s = await (await fetch(`http://${HOST}:${d.port}/v1/stats`)).json();
    assert.equal(s.closes.evicted_4001, 1);
    assert.equal(s.total_connections, 3);
});

test('one publish array naming users of every loop is answered in order, and refused whole when any event is bad', async (t) => {
    const d = await daemonFor(t, ARGS);
    const users = Array.from({ length: LOOPS }, (_, k) => userOn(k, `arr${k}-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));

    // Twice round the loops, so each answer's position is checked against its user.
    const batch = [...users, ...users].map((u, i) => ({ user_id: u, type: 'note', data: { i } }));
    const res = await publishOk(d.port, batch);
    assert.equal(res.length, batch.length);
    res.forEach((r, i) => assert.deepEqual(r, { seq: i < LOOPS ? 1 : 2, delivered: 1 }, `answer ${i}`));
    for (let k = 0; k < LOOPS; k++) {
        await conns[k].next((m) => m.seq === 2, 3000, 'seq 2');
        assert.deepEqual(
            conns[k].all.filter((m) => m.seq).map((m) => [m.user_id, m.seq, m.data.i]),
            [[users[k], 1, k], [users[k], 2, LOOPS + k]],
        );
    }

    // Runs opened on every loop, then an array whose last event (on the last loop) breaks a
    // run's lifecycle: 409 naming it, and nothing of the array is published anywhere.
    const started = users.map((u) => ({ user_id: u, type: 'agent_started', run_id: `run-${u}`, data: CRITICAL.agent_started }));
    assert.deepEqual((await publishOk(d.port, started)).map((r) => r.seq), [3, 3, 3, 3]);
    for (const c of conns) await c.next((m) => m.seq === 3, 3000, 'seq 3');
    const bad = users.map((u) => ({ user_id: u, type: 'agent_thinking', run_id: `run-${u}`, data: CRITICAL.agent_thinking }));
    bad.push({ user_id: users[LOOPS - 1], type: 'tool_completed', run_id: `run-${users[LOOPS - 1]}`, data: CRITICAL.tool_completed });
    const refused = await publish(d.port, bad);
    assert.equal(refused.status, 409, refused.text);
    assert.equal(refused.json.index, LOOPS);
    // A bad field in the middle: 400, nothing published either.
    const bad400 = users.map((u) => ({ user_id: u, type: 'note', data: {} }));
    bad400[1] = { user_id: users[1], type: 'connected', data: {} };
    const r400 = await publish(d.port, bad400);
    assert.equal(r400.status, 400, r400.text);
    assert.equal(r400.json.index, 1);
    for (const c of conns) assert.deepEqual((await settleUnexpected(c, 100)).filter((m) => m.seq > 3), []);

    // The refused arrays used no seq: the next events are 4 on every loop.
    assert.deepEqual((await publishOk(d.port, bad.slice(0, LOOPS))).map((r) => r.seq), [4, 4, 4, 4]);
    const s = await (await fetch(`http://${HOST}:${d.port}/v1/stats`)).json();
    assert.equal(s.events_total, 4 * LOOPS);
    assert.deepEqual(s.loops.map((l) => l.events), [4, 4, 4, 4]);
    assert.equal(s.open_runs, LOOPS);
    // A run is found whichever loop answers the request.
    for (const u of users) {
        const run = await (await fetch(`http://${HOST}:${d.port}/v1/runs/run-${u}`)).json();
        assert.equal(run.user_id, u);
        assert.equal(run.events, 2);
    }
});

test('POST /v1/disconnect reaches a user on any loop, by user_id and by connection_id', async (t) => {
    const d = await daemonFor(t, ARGS);
    const users = Array.from({ length: LOOPS }, (_, k) => userOn(k, `dis${k}-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));
    for (let k = 0; k < LOOPS; k++) {
        const body = k % 2 === 0 ? { user_id: users[k] } : { connection_id: conns[k].connectionId };
        const r = await (await fetch(`http://${HOST}:${d.port}/v1/disconnect`, { method: 'POST', body: JSON.stringify(body) })).json();
        assert.deepEqual(r, { disconnected: 1 }, JSON.stringify(body));
        assert.equal((await conns[k].waitClose()).code, 4003);
    }
});

test('shutdown closes the connections of every loop with 1001', async (t) => {
    const d = await daemonFor(t, ARGS);
    const conns = [];
    for (let k = 0; k < LOOPS; k++) conns.push(closeAfter(t, await connect(d.port, { user_id: userOn(k, `bye${k}-`) })));
    d.proc.kill('SIGTERM');
    for (const c of conns) assert.equal((await c.waitClose(5000)).code, 1001);
    const exit = await d.exited;
    assert.equal(exit.code, 0);
});

/** /v1/stats, once. */
const statsOnce = async (port) => (await fetch(`http://${HOST}:${port}/v1/stats`)).json();

/** The events a client got so far: [seq, data.i]. */
const gotOf = (c) => c.all.filter((m) => typeof m.seq === 'number').map((m) => [m.seq, m.data.i]);

test('arrays naming users of every loop are split by owner, no loop parked: answered in order with each user\'s seqs', async (t) => {
    const d = await daemonFor(t, ARGS);
    // Two users per loop, each with one connection.
    const users = [];
    for (let k = 0; k < LOOPS; k++) users.push(userOn(k, `sp${k}a-`), userOn(k, `sp${k}b-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));
    const sent = new Map(users.map((u) => [u, []])); // per user: data.i in publish order
    let i = 0;
    for (let round = 0; round < 6; round++) {
        // A different interleaving each round: rotated, reversed, repeated users.
        const order = users.map((_, j) => users[(j * (round + 1) + round) % users.length]);
        if (round % 2) order.reverse();
        order.push(order[0], order[order.length - 1]);
        const batch = order.map((u) => ({ user_id: u, type: 'note', data: { i: i++ } }));
        const want = batch.map((e) => {
            sent.get(e.user_id).push(e.data.i);
            return { seq: sent.get(e.user_id).length, delivered: 1 };
        });
        assert.deepEqual(await publishOk(d.port, batch), want, `round ${round}`);
    }
    for (let j = 0; j < users.length; j++) {
        const mine = sent.get(users[j]);
        await conns[j].next((m) => m.seq === mine.length, 5000, `seq ${mine.length}`);
        assert.deepEqual(gotOf(conns[j]), mine.map((x, n) => [n + 1, x]), `user ${j}: each event once, in publish order`);
    }
    const s = await statsOnce(d.port);
    assert.equal(s.cross_loop_bodies.split, 6, JSON.stringify(s.cross_loop_bodies));
    assert.equal(s.cross_loop_bodies.parked, 0, JSON.stringify(s.cross_loop_bodies));
    assert.equal(s.events_total, i);

    // A bad event anywhere refuses the whole array (validated before any part goes out).
    for (const at of [0, 3, users.length - 1]) {
        const bad = users.map((u) => ({ user_id: u, type: 'note', data: { i: -1 } }));
        bad[at] = { user_id: users[at], type: 'note', data: 'not an object' };
        const r = await publish(d.port, bad);
        assert.equal(r.status, 400, r.text);
        assert.equal(r.json.index, at);
    }
    for (const c of conns) assert.deepEqual((await settleUnexpected(c, 100)).filter((m) => m.data && m.data.i === -1), []);
    const s2 = await statsOnce(d.port);
    assert.equal(s2.events_total, i, 'nothing of the refused arrays was published');
    assert.equal(s2.cross_loop_bodies.split, 6);
});

test('an idempotency-key retry of a split array answers with the first seqs as duplicates and delivers nothing twice', async (t) => {
    const d = await daemonFor(t, ARGS);
    const users = Array.from({ length: LOOPS }, (_, k) => userOn(k, `idk${k}-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));
    const batch = [...users, ...users].map((u, i) => ({ user_id: u, type: 'note', idempotency_key: `key-${i}`, data: { i } }));
    const first = await publishOk(d.port, batch);
    first.forEach((r, i) => assert.deepEqual(r, { seq: i < LOOPS ? 1 : 2, delivered: 1 }, `answer ${i}`));
    // The retry: the same seqs, flagged, nothing delivered; one new event among them.
    const retry = [...batch, { user_id: users[1], type: 'note', idempotency_key: 'key-new', data: { i: 99 } }];
    const again = await publishOk(d.port, retry);
    assert.deepEqual(
        again,
        [...first.map((r) => ({ seq: r.seq, delivered: 0, duplicate: true })), { seq: 3, delivered: 1 }],
    );
    for (let k = 0; k < LOOPS; k++) {
        const want = k === 1 ? [[1, k], [2, LOOPS + k], [3, 99]] : [[1, k], [2, LOOPS + k]];
        await conns[k].next((m) => m.seq === want.length, 3000, `seq ${want.length}`);
        await settleUnexpected(conns[k], 100);
        assert.deepEqual(gotOf(conns[k]), want, `user ${k}: delivered once`);
    }
    const s = await statsOnce(d.port);
    assert.equal(s.duplicates_total, batch.length);
    assert.equal(s.cross_loop_bodies.split, 2);
});

test('pipelined /v1/agent bodies, single-loop, split and parked (run ops), keep each user\'s seqs in publish order and the answers in message order', async (t) => {
    const d = await daemonFor(t, ARGS);
    const users = Array.from({ length: LOOPS }, (_, k) => userOn(k, `pipe${k}-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));
    const a = closeAfter(t, await agentSocket(d.port));
    const count = new Map(users.map((u) => [u, []]));
    const frames = [];
    const wants = [];
    let i = 0;
    const ev = (u, type = 'note', extra = {}) => {
        const e = { user_id: u, type, data: { ...(CRITICAL[type] || {}), i: i++ }, ...extra };
        count.get(u).push(e.data.i);
        return e;
    };
    const seqOf = (u) => count.get(u).length; // after ev(): the seq it will get
    const ROUNDS = 12;
    for (let r = 0; r < ROUNDS; r++) {
        const u = users[r % LOOPS];
        // A body for one user (its loop, wherever the socket was accepted).
        frames.push(ev(u));
        wants.push({ seq: seqOf(u), delivered: 1 });
        // A split body: every loop, rotated.
        const split = [];
        const want = [];
        for (let k = 0; k < LOOPS; k++) {
            const v = users[(k + r) % LOOPS];
            split.push(ev(v));
            want.push({ seq: seqOf(v), delivered: 1 });
        }
        frames.push(split);
        wants.push(want);
        // A parked body: a run opened and closed on every loop's user.
        const parked = [];
        const pwant = [];
        for (const v of users) {
            parked.push(ev(v, 'agent_started', { run_id: `run-${r}-${v}` }));
            pwant.push({ seq: seqOf(v), delivered: 1 });
            parked.push(ev(v, 'agent_completed', { run_id: `run-${r}-${v}` }));
            pwant.push({ seq: seqOf(v), delivered: 1 });
        }
        frames.push(parked);
        wants.push(pwant);
    }
    for (const f of frames) a.send(f); // all before any answer
    await waitFor(() => a.all.length >= frames.length, 10000, `${frames.length} answers`);
    assert.equal(a.all.length, frames.length);
    a.all.forEach((reply, n) => assert.deepEqual(reply, wants[n], `answer ${n}`));
    for (let k = 0; k < LOOPS; k++) {
        const mine = count.get(users[k]);
        await conns[k].next((m) => m.seq === mine.length, 5000, `seq ${mine.length}`);
        assert.deepEqual(gotOf(conns[k]), mine.map((x, n) => [n + 1, x]), `user ${k}: publish order`);
    }
    const s = await statsOnce(d.port);
    const paths = s.cross_loop_bodies;
    assert.equal(paths.split, ROUNDS, JSON.stringify(paths));
    assert.equal(paths.parked, ROUNDS, JSON.stringify(paths));
    // The socket's loop owns one user in four: the other single-user bodies went whole.
    assert.equal(paths.forwarded, ROUNDS - ROUNDS / LOOPS, JSON.stringify(paths));
});

test('a body for the users of one other loop is checked there: direct messages and run rules refuse it whole, as on its own loop', async (t) => {
    const d = await daemonFor(t, ARGS);
    const users = Array.from({ length: LOOPS }, (_, k) => userOn(k, `fw${k}-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));
    const a = closeAfter(t, await agentSocket(d.port));
    const frames = [];
    const wants = [];
    for (let k = 0; k < LOOPS; k++) {
        const u = users[k];
        const run = `fwrun-${u}`;
        // Another user's connection: not open for this one (404 at its index).
        frames.push([
            { user_id: u, type: 'note', data: { i: -1 } },
            { user_id: u, type: 'hint', connection_id: conns[(k + 1) % LOOPS].connectionId, data: { i: -1 } },
        ]);
        wants.push({ error: 'connection_id: not open for this user', index: 1, status: 404 });
        // A run never started: 409 at its index.
        frames.push([
            { user_id: u, type: 'note', data: { i: -1 } },
            { user_id: u, type: 'agent_thinking', run_id: run, data: { ...CRITICAL.agent_thinking, i: -1 } },
        ]);
        wants.push({ error: 'run_id: run not open', index: 1, status: 409 });
        // Then all is well: a direct message to its own connection, a run opened.
        frames.push([
            { user_id: u, type: 'hint', connection_id: conns[k].connectionId, data: { i: 1 } },
            { user_id: u, type: 'agent_started', run_id: run, data: { ...CRITICAL.agent_started, i: 2 } },
        ]);
        wants.push([{ delivered: 1 }, { seq: 1, delivered: 1 }]);
    }
    for (const f of frames) a.send(f);
    await waitFor(() => a.all.length >= frames.length, 10000, `${frames.length} answers`);
    a.all.forEach((reply, n) => assert.deepEqual(reply, wants[n], `answer ${n}`));
    for (let k = 0; k < LOOPS; k++) {
        await conns[k].next((m) => m.seq === 1, 3000, 'seq 1');
        await settleUnexpected(conns[k], 50);
        assert.deepEqual(
            conns[k].all.filter((m) => m.data && 'i' in m.data).map((m) => [m.type, m.data.i]),
            [['hint', 1], ['agent_started', 2]],
            `user ${k}: nothing of the refused bodies`,
        );
    }
    const s = await statsOnce(d.port);
    assert.equal(s.cross_loop_bodies.forwarded, 3 * (LOOPS - 1), JSON.stringify(s.cross_loop_bodies));
    assert.equal(s.open_runs, LOOPS);
});

test('a body whose run ops are all for users of the receiving loop is split too, and still refused whole by their run rules', async (t) => {
    const d = await daemonFor(t, ARGS);
    const users = Array.from({ length: LOOPS }, (_, k) => userOn(k, `lr${k}-`));
    const conns = [];
    for (const u of users) conns.push(closeAfter(t, await connect(d.port, { user_id: u })));
    const a = closeAfter(t, await agentSocket(d.port));
    // The socket's loop: the one user whose body is not forwarded.
    let home = -1;
    for (let k = 0; k < LOOPS; k++) {
        const before = (await statsOnce(d.port)).cross_loop_bodies.forwarded;
        a.send({ user_id: users[k], type: 'note', data: { i: 0 } });
        await a.next(() => true, 3000, 'answer');
        if ((await statsOnce(d.port)).cross_loop_bodies.forwarded === before) home = k;
    }
    assert.ok(home >= 0, 'one loop publishes its own users');
    const run = `lrrun-${users[home]}`;
    const others = users.filter((_, k) => k !== home).map((u) => ({ user_id: u, type: 'note', data: { i: -1 } }));
    a.send([...others, { user_id: users[home], type: 'agent_thinking', run_id: run, data: { ...CRITICAL.agent_thinking, i: -1 } }]);
    assert.deepEqual(await a.next(() => true, 3000, 'refusal'), { error: 'run_id: run not open', index: LOOPS - 1, status: 409 });
    a.send([{ user_id: users[home], type: 'agent_started', run_id: run, data: { ...CRITICAL.agent_started, i: 1 } }, ...others.map((e) => ({ ...e, data: { i: 1 } }))]);
    assert.deepEqual(await a.next(() => true, 3000, 'answer'), Array.from({ length: LOOPS }, () => ({ seq: 2, delivered: 1 })));
    for (const c of conns) {
        await c.next((m) => m.seq === 2, 3000, 'seq 2');
        await settleUnexpected(c, 50);
        assert.deepEqual(c.all.filter((m) => m.seq).map((m) => m.data.i), [0, 1], 'nothing of the refused body');
    }
    const s = await statsOnce(d.port);
    assert.deepEqual(s.cross_loop_bodies, { forwarded: LOOPS - 1, split: 1, parked: 0 });
    assert.equal(s.open_runs, 1);
});
