// Several agentcastd nodes on one Redis (--broker=redis://..., issue #6): delivery across
// nodes in seq order, cross-node resume after a node is SIGKILLed, the cluster-wide per-user
// cap, a Redis outage and an empty restart (503, /healthz, capped backoff, 1012 + resync with
// a new epoch), dropped Redis connections with the data intact (resubscribe, no gap), run
// lifecycle and idempotency across nodes, run timeouts with two sweepers, an unreachable
// Redis at start, readiness at `listening`, node and user isolation, --redis-prefix
// namespacing, and the flag forms (--broker X, AGENTCAST_BROKER, /DB, AGENTCAST_REDIS_PASSWORD).
//
// A real redis-server (/usr/bin/redis-server, no persistence) is started on a free loopback
// port: one for the file, plus its own for each test that stops or configures it. Every test
// uses its own --redis-prefix, so tests sharing that server never see each other.
// cluster_shards.test.mjs runs this whole file again with AGENTCAST_TEST_SHARDS=2: every
// "Redis" is then two redis-servers behind one --broker=redis://A,redis://B (shards).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
    BIN,
    HOST,
    WsClient,
    startDaemon,
    connect,
    publish,
    publishOk,
    request,
    assertJsonError,
    byType,
    sleep,
    uid,
    waitFor,
    withTimeout,
} from './helpers.mjs';
import { agentSocket, agentPublish, getRun, stats, openUserWs, dataFor } from './helpers3.mjs';
import {
    newRedis,
    redisFor,
    redisKeysAll,
    shardOf,
    testShards,
    userOnShard,
    redisSkipReason,
    clusterFor,
    killNode,
    healthz,
    freePort,
    uniquePrefix,
    redisKeys,
    redisCommand,
    nodeArgs,
} from './redis_helpers.mjs';

const SKIP = redisSkipReason();
if (SKIP) console.log(`# SKIP cluster tests: ${SKIP}`);

// One redis-server for the tests that do not stop it (started on first use).
let sharedP = null;
function sharedRedis() {
    sharedP ??= newRedis().start();
    return sharedP;
}
after(async () => {
    if (sharedP) await (await sharedP.catch(() => null))?.dispose();
});

/** The user's events (envelopes with a seq) among a client's messages. */
const eventsOf = (c) => c.all.filter((m) => typeof m.seq === 'number');


function ev(user, type, run, { call = 'c1', thread, key } = {}) {
    const e = { user_id: user, type, data: dataFor(type, call) };
    if (run !== null) e.run_id = run;
    if (thread !== undefined) e.thread_id = thread;
    if (key !== undefined) e.idempotency_key = key;
    return e;
}

async function expect409(port, body, error, index) {
    const r = await publish(port, body);
    assertJsonError(assert, r, 409, error);
    if (index !== undefined) assert.equal(r.json.index, index, r.text);
    return r;
}

/** Asserts the stats fields of a Redis-backed node. */
function assertRedisStats(s, { up = true, what = '' } = {}) {
    assert.equal(s.broker, 'redis', `${what} stats.broker: ${JSON.stringify(s)}`);
    assert.equal(s.broker_up, up, `${what} stats.broker_up: ${JSON.stringify(s)}`);
    assert.equal(typeof s.broker_reconnects, 'number', `${what} stats.broker_reconnects: ${JSON.stringify(s)}`);
    const rtt = s.broker_rtt_us;
    assert.ok(rtt && typeof rtt === 'object', `${what} stats.broker_rtt_us is an object: ${JSON.stringify(s)}`);
    for (const k of ['p50', 'p99', 'max']) {
        assert.equal(typeof rtt[k], 'number', `${what} broker_rtt_us.${k}: ${JSON.stringify(rtt)}`);
        assert.ok(rtt[k] >= 0, `${what} broker_rtt_us.${k} >= 0: ${JSON.stringify(rtt)}`);
    }
    assert.ok(rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max, `${what} p50 <= p99 <= max: ${JSON.stringify(rtt)}`);
}

const deliveriesOf = async (d) => (await stats(d.port)).deliveries_total;

// ==========================================================================================
// 1. Delivery across nodes

test('two nodes, one Redis: a user with tabs on both nodes gets every event once, in seq order, the same envelopes on both tabs, whichever node publishes (single, arrays, /v1/agent, concurrent)', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    // Node B takes the "--broker URL" form (two arguments).
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2, { perNode: [{}, { brokerForm: 'space' }] });
    for (const d of [A, B]) {
        const h = await healthz(d.port);
        assert.equal(h.status, 200, `node ${d.name} /healthz: ${h.text}`);
        assert.deepEqual(h.json, { status: 'ok', broker: 'up' });
        assertRedisStats(await stats(d.port), { what: `node ${d.name}` });
    }

    const user = uid('tabs');
    const a1 = own(await connect(A.port, { user_id: user }));
    const b1 = own(await connect(B.port, { user_id: user }));
    for (const c of [a1, b1]) {
        assert.equal(c.hello.user_id, user);
        assert.equal(c.hello.data.last_seq, 0, `a new user's stream starts empty: ${JSON.stringify(c.hello)}`);
        assert.equal(c.hello.data.recovered, false);
        assert.equal(typeof c.hello.data.epoch, 'string');
        assert.ok(c.hello.data.epoch.length > 0 && c.hello.data.epoch.length <= 16, `epoch ${c.hello.data.epoch}`);
    }
    assert.equal(a1.hello.data.epoch, b1.hello.data.epoch, 'one user, one epoch on every node');
    assert.notEqual(a1.hello.data.connection_id, b1.hello.data.connection_id, 'connection ids unique across the cluster');

    const agA = own(await agentSocket(A.port));
    const agB = own(await agentSocket(B.port));

    const bySeq = new Map(); // seq -> i (the payload marker)
    let next = 0; // next payload marker
    const mk = () => {
        const i = next++;
        return { user_id: user, type: i % 5 === 0 ? 'agent_thinking' : 'chunk', data: { i, thought: `t${i}` } };
    };

    // Phase 1: sequential, alternating nodes and ways of publishing: seqs must be contiguous.
    const ROUNDS = 60;
    for (let r = 0; r < ROUNDS; r++) {
        const d = r % 2 === 0 ? A : B;
        const ag = r % 2 === 0 ? agA : agB;
        const way = Math.floor(r / 2) % 3;
        const body = r % 4 < 2 ? mk() : [mk(), mk(), mk(), mk()];
        let reply;
        if (way === 2) {
            reply = await agentPublish(ag, body, 5000);
            assert.equal(reply.error, undefined, `agent socket on ${d.name}: ${JSON.stringify(reply)}`);
        } else {
            reply = await publishOk(d.port, body);
        }
        const bodies = Array.isArray(body) ? body : [body];
        const replies = Array.isArray(body) ? reply : [reply];
        assert.ok(Array.isArray(replies) && replies.length === bodies.length, `reply shape for ${JSON.stringify(body)}: ${JSON.stringify(reply)}`);
        replies.forEach((rep, k) => {
            assert.equal(rep.seq, bySeq.size + 1, `round ${r} via ${d.name}: seqs are assigned 1, 2, 3... across nodes: ${JSON.stringify(reply)}`);
            assert.equal(rep.delivered, 2, `round ${r} via ${d.name}: delivered counts the user's connections on both nodes: ${JSON.stringify(reply)}`);
            assert.equal(rep.duplicate, undefined);
            bySeq.set(rep.seq, bodies[k].data.i);
        });
    }
    const phase1 = bySeq.size;
    assert.equal(phase1, 150, 'phase 1 published 150 events');

    // Phase 2: 40 publishes at once, half through each node (a quarter of them arrays of 3):
    // seqs come from Redis atomically, so the replies hold each seq phase1+1..N exactly once.
    const jobs = [];
    for (let j = 0; j < 40; j++) {
        const d = j % 2 === 0 ? A : B;
        const body = j % 4 === 3 ? [mk(), mk(), mk()] : mk();
        jobs.push(publishOk(d.port, body).then((reply) => ({ body, reply })));
    }
    for (const { body, reply } of await Promise.all(jobs)) {
        const bodies = Array.isArray(body) ? body : [body];
        const replies = Array.isArray(body) ? reply : [reply];
        assert.equal(replies.length, bodies.length);
        const seqs = replies.map((x) => x.seq);
        for (let k = 1; k < seqs.length; k++) {
            assert.equal(seqs[k], seqs[k - 1] + 1, `an array's seqs are consecutive: ${JSON.stringify(reply)}`);
        }
        replies.forEach((rep, k) => {
            assert.ok(!bySeq.has(rep.seq), `seq ${rep.seq} handed out twice (concurrent publishes on two nodes)`);
            assert.equal(rep.delivered, 2);
            bySeq.set(rep.seq, bodies[k].data.i);
        });
    }
    const total = bySeq.size;
    assert.equal(total, phase1 + 30 + 10 * 3, 'phase 2 published 60 events');
    assert.deepEqual([...bySeq.keys()].sort((x, y) => x - y), Array.from({ length: total }, (_, k) => k + 1), 'seqs 1..N, no gap');

    await waitFor(() => eventsOf(a1).length >= total && eventsOf(b1).length >= total, 10000, `both tabs receiving ${total} events: A has ${eventsOf(a1).length}, B has ${eventsOf(b1).length}`);
    await sleep(300); // anything extra (a duplicate) would show up now
    for (const [name, c] of [['A', a1], ['B', b1]]) {
        const evs = eventsOf(c);
        assert.equal(evs.length, total, `tab on ${name}: exactly ${total} events, none twice`);
        assert.deepEqual(evs.map((m) => m.seq), Array.from({ length: total }, (_, k) => k + 1), `tab on ${name}: seqs 1..${total} in order`);
        for (const m of evs) {
            assert.equal(m.user_id, user);
            assert.equal(m.data.i, bySeq.get(m.seq), `tab on ${name}: seq ${m.seq} carries the event published with that seq`);
        }
        assert.ok(c.isOpen, `tab on ${name} still open`);
    }
    assert.deepEqual(eventsOf(a1), eventsOf(b1), 'the same envelopes (type, seq, data, timestamp) on both nodes');
    const s = [await stats(A.port), await stats(B.port)];
    assert.equal(s[0].deliveries_total, total, `node A handed each event to its one tab once: ${JSON.stringify(s[0])}`);
    assert.equal(s[1].deliveries_total, total, `node B handed each event to its one tab once: ${JSON.stringify(s[1])}`);
});

// ==========================================================================================
// 2. Cross-node resume after SIGKILL

test('cross-node resume: 10,000 events to 4 users while node A (holding 8 of their 12 connections) is SIGKILLed mid-stream; the clients resume on node B with last_seq+epoch: none lost, none twice, in order', { skip: SKIP, timeout: 120000 }, async (t) => {
    const USERS = 4;
    const ON_A = 2; // per user, killed with node A and resumed on B
    const ON_B = 1; // per user, on B all along
    const EVENTS = 10000;
    const BATCH = 50;
    const KILL_AT = 4000; // acknowledged events when A is killed
    const PER_USER = EVENTS / USERS;

    const redis = await sharedRedis();
    // History holds every event of a user (2,500), so every resume is a full replay; the
    // per-user cap is raised so that the dead node's entries in the registry (the kill leaves
    // them there until they expire) cannot evict a live connection: 4001 is not tested here.
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2, { extra: ['--history-size', '5000', '--max-conns-per-user', '8'] });
    const tag = `resume-${process.pid}-${Date.now()}`;
    const users = Array.from({ length: USERS }, (_, i) => `${tag}-u${i}`);

    const failures = [];
    const fail = (msg) => {
        if (failures.length < 40) failures.push(msg);
    };
    const epochs = new Map();
    let stopping = false;

    const slots = [];
    for (const user of users) {
        for (let k = 0; k < ON_A + ON_B; k++) {
            slots.push({ name: `${user}#${k}${k < ON_A ? '@A' : '@B'}`, user, home: k < ON_A ? A : B, last: 0, ks: [], ws: null, resumes: 0, hellos: [] });
        }
    }
    own({ terminate: () => slots.forEach((s) => s.ws?.terminate()) });

    function onMessage(slot, msg) {
        if (msg.type === 'connected') {
            slot.hellos.push(msg);
            const e = msg.data?.epoch;
            if (!epochs.has(slot.user)) epochs.set(slot.user, e);
            else if (epochs.get(slot.user) !== e) fail(`${slot.name}: epoch ${epochs.get(slot.user)} then ${e} (same Redis, nothing lost)`);
            return;
        }
        if (msg.type === 'ping') return;
        if (msg.type === 'resync') {
            fail(`${slot.name}: resync ${JSON.stringify(msg.data)} after last_seq=${slot.last} (history covers all)`);
            return;
        }
        if (typeof msg.seq !== 'number') {
            fail(`${slot.name}: unexpected ${JSON.stringify(msg).slice(0, 200)}`);
            return;
        }
        if (msg.user_id !== slot.user) {
            fail(`${slot.name}: an event of ${msg.user_id}`);
            return;
        }
        if (msg.seq <= slot.last) {
            fail(`${slot.name}: seq ${msg.seq} again (last ${slot.last})`);
            return;
        }
        if (msg.seq !== slot.last + 1) fail(`${slot.name}: gap ${slot.last} -> ${msg.seq}`);
        slot.last = msg.seq;
        slot.ks.push([msg.seq, msg.data?.k]);
    }

    async function open(slot, d, resume) {
        const query = { user_id: slot.user };
        if (resume) {
            query.last_seq = String(slot.last);
            query.epoch = epochs.get(slot.user);
        }
        let mine = null;
        const r = await openUserWs(d.port, query, {
            onMessage: (msg, w) => {
                if (mine === null) {
                    mine = w;
                    slot.ws = w;
                }
                onMessage(slot, msg);
            },
            onClose: (code, reason, w) => {
                if (w !== slot.ws) return;
                slot.ws = null;
                if (stopping) return;
                if (!A.killedByTest || d !== A) {
                    fail(`${slot.name}: closed by node ${d.name} with ${code} ${reason}`);
                    return;
                }
                reconnect(slot);
            },
        });
        if (resume && r.hello.data.recovered !== true) {
            fail(`${slot.name}: resume on ${d.name} with last_seq=${query.last_seq} epoch=${query.epoch} not recovered: ${JSON.stringify(r.hello)}`);
        }
    }

    const reconnects = [];
    function reconnect(slot) {
        const p = (async () => {
            for (let attempt = 0; attempt < 20; attempt++) {
                try {
                    await open(slot, B, true);
                    slot.resumes += 1;
                    return;
                } catch (err) {
                    if (attempt === 19) fail(`${slot.name}: resume on B failed: ${err.message}`);
                    await sleep(100);
                }
            }
        })();
        reconnects.push(p);
    }

    for (const s of slots) await open(s, s.home, false);
    assert.deepEqual(failures, [], 'initial connections');

    // ---- the stream: 200 batches of 50 (users interleaved), idempotency keys on every event.
    const batches = [];
    const perUser = new Map(users.map((u) => [u, 0]));
    for (let b = 0; b < EVENTS / BATCH; b++) {
        const body = [];
        for (let j = 0; j < BATCH; j++) {
            const user = users[(b * BATCH + j) % USERS];
            const k = perUser.get(user);
            perUser.set(user, k + 1);
            body.push({ user_id: user, type: j % 9 === 0 ? 'agent_thinking' : 'chunk', data: { k, thought: `b${b} j${j}` }, idempotency_key: `${tag}-${user}-${k}` });
        }
        batches.push(body);
    }
    const queue = batches.map((body, b) => ({ b, body }));
    const acked = new Map(users.map((u) => [u, new Map()])); // user -> k -> seq
    let ackedCount = 0;
    let unknownOutcomes = 0;
    let duplicatesOnRetry = 0;

    function record(item, reply, via) {
        if (!Array.isArray(reply) || reply.length !== item.body.length) {
            throw new Error(`batch ${item.b} via ${via}: reply ${JSON.stringify(reply).slice(0, 300)}`);
        }
        reply.forEach((rep, j) => {
            const e = item.body[j];
            if (typeof rep.seq !== 'number') throw new Error(`batch ${item.b} via ${via}: ${JSON.stringify(rep)}`);
            if (rep.duplicate) duplicatesOnRetry += 1;
            const m = acked.get(e.user_id);
            if (m.has(e.data.k)) {
                if (m.get(e.data.k) !== rep.seq) fail(`${e.user_id} k=${e.data.k}: acknowledged as seq ${m.get(e.data.k)} and ${rep.seq}`);
            } else {
                m.set(e.data.k, rep.seq);
                ackedCount += 1;
            }
        });
    }

    // Lane A: POST /v1/publish on node A until it dies; a batch in flight at the kill has an
    // unknown outcome and goes back to the queue: lane B repeats it with the same idempotency
    // keys (a duplicate answer if A had committed it, new seqs if not).
    async function laneA() {
        while (queue.length) {
            const item = queue.shift();
            let r;
            try {
                r = await publish(A.port, item.body, { timeoutMs: 10000 });
            } catch (err) {
                if (!A.killedByTest) throw new Error(`lane A: ${err.message} before the kill`);
                unknownOutcomes += 1;
                queue.unshift(item);
                return;
            }
            if (r.status !== 200) {
                if (A.killedByTest) {
                    unknownOutcomes += 1;
                    queue.unshift(item);
                    return;
                }
                throw new Error(`lane A: batch ${item.b}: HTTP ${r.status} ${r.text}`);
            }
            record(item, r.json, 'A');
            await sleep(8);
        }
    }
    // Lane B: the publisher socket on node B.
    const agB = own(await agentSocket(B.port));
    let laneAEnded = false;
    async function laneB() {
        for (;;) {
            const item = queue.shift();
            if (!item) {
                if (laneAEnded) return;
                await sleep(10);
                continue;
            }
            const reply = await agentPublish(agB, item.body, 10000);
            if (!Array.isArray(reply)) throw new Error(`lane B: batch ${item.b}: ${JSON.stringify(reply)}`);
            record(item, reply, 'B');
            await sleep(8);
        }
    }
    async function killer() {
        await waitFor(() => ackedCount >= KILL_AT || queue.length === 0, 30000, `${KILL_AT} events acknowledged`);
        assert.ok(queue.length > 0, 'node A is killed mid-stream, not after it');
        await killNode(A);
    }

    t.after(() => {
        stopping = true;
        queue.length = 0; // a failed test must not leave the lanes running
        laneAEnded = true;
    });
    const started = Date.now();
    const pA = laneA().finally(() => {
        laneAEnded = true;
    });
    await Promise.all([pA, laneB(), killer()]);
    const publishMs = Date.now() - started;
    assert.ok(A.killedByTest, 'node A was killed');
    assert.equal(ackedCount, EVENTS, `every one of the ${EVENTS} events acknowledged exactly once (by key)`);

    // Per user: the acknowledged seqs are exactly 1..2500 (no seq burnt by the crash).
    const seqToK = new Map(users.map((u) => [u, new Map()]));
    for (const u of users) {
        const m = acked.get(u);
        assert.equal(m.size, PER_USER, `${u}: ${PER_USER} events acknowledged`);
        for (const [k, seq] of m) seqToK.get(u).set(seq, k);
        assert.deepEqual([...seqToK.get(u).keys()].sort((x, y) => x - y), Array.from({ length: PER_USER }, (_, i) => i + 1), `${u}: acknowledged seqs 1..${PER_USER}`);
    }

    // Every A client comes back on B and catches up.
    await waitFor(() => slots.every((s) => s.last >= PER_USER) || failures.length > 0, 30000, `every client reaching seq ${PER_USER}; behind: ${slots.filter((s) => s.last < PER_USER).map((s) => `${s.name}@${s.last}`).join(' ')}`);
    await Promise.all(reconnects);
    await sleep(300);
    stopping = true;

    assert.deepEqual(failures, [], 'no loss, duplicate, gap, resync, misroute or unexpected close');
    for (const s of slots) {
        assert.equal(s.ks.length, PER_USER, `${s.name}: exactly ${PER_USER} events`);
        assert.deepEqual(s.ks.map(([seq]) => seq), Array.from({ length: PER_USER }, (_, i) => i + 1), `${s.name}: seqs 1..${PER_USER} in order`);
        for (const [seq, k] of s.ks) {
            if (seqToK.get(s.user).get(seq) !== k) {
                assert.fail(`${s.name}: seq ${seq} carries k=${k}, but it was acknowledged for k=${seqToK.get(s.user).get(seq)}`);
            }
        }
        if (s.home === A) assert.ok(s.resumes >= 1, `${s.name}: resumed on B after the kill`);
        else assert.equal(s.resumes, 0, `${s.name}: never disconnected`);
    }
    const received = slots.reduce((n, s) => n + s.ks.length, 0);
    assert.equal(received, EVENTS * (ON_A + ON_B), `all ${EVENTS * (ON_A + ON_B)} deliveries`);
    // A fresh connection on B sees the user's newest seq.
    const probe = own(await connect(B.port, { user_id: users[0] }));
    assert.equal(probe.hello.data.last_seq, PER_USER);
    assert.equal(probe.hello.data.epoch, epochs.get(users[0]));
    t.diagnostic(`published ${EVENTS} events in ${publishMs} ms; ${unknownOutcomes} batch(es) in flight at the kill, ${duplicatesOnRetry} duplicate answer(s) on retry`);
});

// ==========================================================================================
// 3. The per-user cap is cluster-wide

test('cluster-wide cap: 3 tabs over A and B, a 4th on B evicts the oldest (on A) with closing + 4001; a 5th on A evicts the next oldest (on B); the others stay, receive, and delivered counts the registry', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const user = uid('cap');
    const other = uid('bystander');
    // Another user with 3 tabs (at its cap) over both nodes: never touched.
    const others = [own(await connect(A.port, { user_id: other })), own(await connect(A.port, { user_id: other })), own(await connect(B.port, { user_id: other }))];

    const t1 = own(await connect(A.port, { user_id: user }));
    await sleep(50);
    const t2 = own(await connect(B.port, { user_id: user }));
    await sleep(50);
    const t3 = own(await connect(A.port, { user_id: user }));
    await sleep(50);

    let r = await publishOk(B.port, { user_id: user, type: 'chunk', data: { n: 1 } });
    assert.deepEqual(r, { seq: 1, delivered: 3 }, 'three tabs in the registry');
    for (const c of [t1, t2, t3]) assert.equal((await c.next(byType('chunk'), 3000, 'chunk 1')).seq, 1);

    const t4 = own(await connect(B.port, { user_id: user }));
    const close1 = await t1.waitClose(5000);
    assert.equal(close1.code, 4001, `the oldest tab (on A) is evicted by a 4th on B: ${JSON.stringify(close1)} ${JSON.stringify(t1.all)}`);
    const closing1 = t1.all.find(byType('closing'));
    assert.ok(closing1, `closing envelope before the close: ${JSON.stringify(t1.all)}`);
    assert.equal(closing1.data.code, 4001);
    assert.equal(typeof closing1.data.reason, 'string');
    assert.equal(t1.all.at(-1).type, 'closing', 'closing is the last message before the close');
    await sleep(200);
    for (const [n, c] of [['t2', t2], ['t3', t3], ['t4', t4]]) assert.ok(c.isOpen, `${n} stays open`);

    r = await publishOk(A.port, { user_id: user, type: 'chunk', data: { n: 2 } });
    assert.deepEqual(r, { seq: 2, delivered: 3 }, 'the registry holds t2, t3, t4');
    for (const c of [t2, t3, t4]) assert.equal((await c.next((m) => m.type === 'chunk' && m.data.n === 2, 3000, 'chunk 2')).seq, 2);

    const t5 = own(await connect(A.port, { user_id: user }));
    const close2 = await t2.waitClose(5000);
    assert.equal(close2.code, 4001, `the next oldest (on B) is evicted by a 5th on A: ${JSON.stringify(close2)}`);
    assert.equal(t2.all.find(byType('closing'))?.data?.code, 4001, `closing 4001 on t2: ${JSON.stringify(t2.all)}`);
    await sleep(200);
    for (const [n, c] of [['t3', t3], ['t4', t4], ['t5', t5]]) assert.ok(c.isOpen, `${n} stays open`);

    r = await publishOk(B.port, { user_id: user, type: 'chunk', data: { n: 3 } });
    assert.deepEqual(r, { seq: 3, delivered: 3 }, 'the registry holds t3, t4, t5');
    for (const c of [t3, t4, t5]) assert.equal((await c.next((m) => m.type === 'chunk' && m.data.n === 3, 3000, 'chunk 3')).seq, 3);
    await sleep(200);
    assert.deepEqual(eventsOf(t1).map((m) => m.seq), [1], 't1 got nothing after its eviction');
    assert.deepEqual(eventsOf(t2).map((m) => m.seq), [1, 2], 't2 got nothing after its eviction');
    assert.deepEqual(eventsOf(t3).map((m) => m.seq), [1, 2, 3]);
    assert.deepEqual(eventsOf(t4).map((m) => m.seq), [2, 3]);
    assert.deepEqual(eventsOf(t5).map((m) => m.seq), [3]);

    // The bystander: 3 tabs, none evicted, and its delivered count is its own.
    for (const c of others) assert.ok(c.isOpen, 'the other user\'s tabs are not evicted');
    assert.deepEqual(await publishOk(A.port, { user_id: other, type: 'chunk', data: {} }), { seq: 1, delivered: 3 });
    for (const c of others) assert.equal((await c.next(byType('chunk'), 3000, 'bystander chunk')).user_id, other);

    const [sa, sb] = [await stats(A.port), await stats(B.port)];
    assert.equal(sa.closes.evicted_4001, 1, `node A closed one tab with 4001 (t1): ${JSON.stringify(sa.closes)}`);
    assert.equal(sb.closes.evicted_4001, 1, `node B closed one tab with 4001 (t2): ${JSON.stringify(sb.closes)}`);
});

// ==========================================================================================
// 4. Redis lost and back empty

test('Redis stopped mid-test: publishes 503 (never 200), /healthz 503 degraded, connections stay open; back empty: /healthz 200, 1012 + resume with recovered:false and resync to the new epoch (seq from 1), every 200 received', { skip: SKIP, timeout: 90000 }, async (t) => {
    const redis = await redisFor(t);
    const OUTAGE_MS = 6500;
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const user = uid('outage');

    // Two tabs (one per node); each, when closed by the server, resumes on the other node.
    const failures = [];
    const fail = (m) => failures.length < 40 && failures.push(m);
    const slots = [
        { name: 'tabA', at: A, conns: [] },
        { name: 'tabB', at: B, conns: [] },
    ];
    own({ terminate: () => slots.forEach((s) => s.conns.forEach((c) => c.ws?.terminate())) });
    let stopping = false;

    async function open(slot, d, query) {
        const conn = { node: d.name, msgs: [], close: null, hello: null, ws: null };
        slot.conns.push(conn);
        let r;
        try {
            r = await openUserWs(d.port, { user_id: user, ...query }, {
                onMessage: (msg) => conn.msgs.push(msg),
                onClose: (code, reason) => {
                    conn.close = { code, reason };
                    if (stopping) return;
                    if (code !== 1012) {
                        fail(`${slot.name} on ${d.name}: closed with ${code} ${reason}`);
                        return;
                    }
                    const last = conn.msgs.filter((m) => typeof m.seq === 'number').at(-1)?.seq ?? conn.hello.data.last_seq;
                    const to = d === A ? B : A;
                    // Like a real client: retry the resume a few times (the other node may be a
                    // moment behind in reconnecting to Redis).
                    (async () => {
                        for (let attempt = 1; ; attempt++) {
                            try {
                                await open(slot, to, { last_seq: String(last), epoch: conn.hello.data.epoch });
                                return;
                            } catch (err) {
                                slot.resumeErrors = (slot.resumeErrors || 0) + 1;
                                if (attempt >= 20) {
                                    fail(`${slot.name}: resume on ${to.name}: ${err.message}`);
                                    return;
                                }
                                await sleep(250);
                            }
                        }
                    })();
                },
            });
        } catch (err) {
            slot.conns.splice(slot.conns.indexOf(conn), 1);
            throw err;
        }
        conn.ws = r.ws;
        conn.hello = r.hello;
        return conn;
    }
    for (const s of slots) await open(s, s.at, {});
    const epoch0 = slots[0].conns[0].hello.data.epoch;
    assert.equal(slots[1].conns[0].hello.data.epoch, epoch0);

    // A publisher that never stops: one event every 30 ms, alternating nodes.
    const log = []; // {i, via, status, seq, phase}
    let phase = 'up';
    let pubStop = false;
    t.after(() => {
        pubStop = true; // a failed test must not leave the publisher running
        stopping = true;
    });
    const publisher = (async () => {
        for (let i = 0; !pubStop; i++) {
            const d = i % 2 === 0 ? A : B;
            const ph = phase;
            let r;
            try {
                r = await publish(d.port, { user_id: user, type: 'chunk', data: { i } }, { timeoutMs: 5000 });
            } catch (err) {
                log.push({ i, via: d.name, status: 'error', error: err.message, phase: ph });
                await sleep(30);
                continue;
            }
            log.push({ i, via: d.name, status: r.status, seq: r.json?.seq, delivered: r.json?.delivered, body: r.text, phase: ph });
            await sleep(30);
        }
    })();

    await waitFor(() => log.filter((x) => x.status === 200).length >= 10, 5000, 'ten publishes while Redis is up');

    // ---- Redis goes away ------------------------------------------------------------------
    await redis.stop(); // resolves once redis-server has exited
    const stoppedAt = Date.now();
    phase = 'down';
    for (const d of [A, B]) {
        await waitFor(async () => (await healthz(d.port)).status === 503, 5000, `node ${d.name} /healthz 503 after Redis stopped`);
        const h = await healthz(d.port);
        const want = { status: 'degraded', broker: 'down' };
        if (redis.shards.length > 1) want.shards_down = redis.shards.map((r) => r.addr);
        assert.deepEqual(h.json, want, `node ${d.name} /healthz body: ${h.text}`);
        assertRedisStats(await stats(d.port), { up: false, what: `node ${d.name} (Redis down)` });
    }
    for (const d of [A, B]) {
        const r = await publish(d.port, { user_id: user, type: 'chunk', data: { probe: d.name } });
        assertJsonError(assert, r, 503);
        const arr = await publish(d.port, [{ user_id: user, type: 'chunk', data: {} }, { user_id: uid('x'), type: 'chunk', data: {} }]);
        assertJsonError(assert, arr, 503);
    }
    const ag = own(await agentSocket(A.port));
    const agReply = await agentPublish(ag, { user_id: user, type: 'chunk', data: { probe: 'agent' } }, 5000);
    assert.equal(agReply.status, 503, `/v1/agent while Redis is down: ${JSON.stringify(agReply)}`);
    assert.equal(typeof agReply.error, 'string');
    // An outage of 6.5 s: an uncapped doubling backoff (0.1, 0.2, 0.4 ... s) would be
    // waiting until ~12.7 s by then; capped at ~2 s (jittered) a node is back within ~3 s.
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt)));
    for (const s of slots) {
        assert.equal(s.conns.length, 1, `${s.name}: no reconnect while Redis is down`);
        assert.equal(s.conns[0].close, null, `${s.name}: the connection stays open while Redis is down`);
    }
    assert.deepEqual(failures, []);

    // ---- Redis back, empty ---------------------------------------------------------------
    phase = 'back';
    await redis.restart();
    const restartedAt = Date.now();
    const backAfter = await Promise.all(
        [A, B].map(async (d) => {
            // (with shards: until every one is back, not just the first: 200 "partial")
            await waitFor(async () => (await healthz(d.port)).json?.status === 'ok', 10000, `node ${d.name} /healthz 200 ok after Redis came back`, 20);
            return Date.now() - restartedAt;
        }),
    );
    for (const [k, d] of [A, B].entries()) {
        assert.deepEqual((await healthz(d.port)).json, { status: 'ok', broker: 'up' });
        assert.ok(backAfter[k] <= 4000, `node ${d.name} reconnected ${backAfter[k]} ms after Redis came back (backoff capped at ~2 s, jittered)`);
    }
    // Each tab: closing 1012 + close 1012, then its resume with the old last_seq+epoch.
    await waitFor(() => slots.every((s) => s.conns.length >= 2 && s.conns[1].hello) || failures.length > 0, 15000, `both tabs closed with 1012 and resumed: ${JSON.stringify(slots.map((s) => s.conns.map((c) => c.close)))}`);
    const resumedAt = log.length;
    await waitFor(() => log.slice(resumedAt).filter((x) => x.status === 200).length >= 10, 10000, 'ten more publishes after the resume');
    pubStop = true;
    await publisher;
    await sleep(500);
    stopping = true;

    assert.deepEqual(failures, [], 'no unexpected close or failed resume');
    const by = (st) => log.filter((x) => x.status === st);
    const other = log.filter((x) => x.status !== 200 && x.status !== 503);
    assert.deepEqual(other, [], 'every publish answered 200 or 503');
    for (const x of by(503)) {
        let j;
        try {
            j = JSON.parse(x.body);
        } catch {
            j = null;
        }
        assert.equal(typeof j?.error, 'string', `503 body has an error: ${x.body}`);
    }
    assert.ok(by(503).length >= 5, `publishes during the outage were refused: ${by(503).length}`);
    const ok = by(200);
    const okBefore = ok.filter((x) => x.phase === 'up');
    const okAfter = ok.filter((x) => x.phase === 'back');
    assert.ok(okBefore.length >= 10 && okAfter.length >= 10, `200s before (${okBefore.length}) and after (${okAfter.length})`);
    assert.deepEqual(ok.filter((x) => x.phase === 'down'), [], 'no 200 while Redis was down');
    assert.deepEqual(okBefore.map((x) => x.seq), okBefore.map((_, k) => k + 1), 'seqs 1.. before the outage');
    assert.deepEqual(okAfter.map((x) => x.seq), okAfter.map((_, k) => k + 1), 'seqs restart at 1 in the new epoch');

    let epoch1 = null;
    for (const s of slots) {
        const [c0, c1, ...more] = s.conns;
        assert.equal(more.length, 0, `${s.name}: exactly one resume (${s.conns.length} connections)`);
        assert.equal(c0.close?.code, 1012, `${s.name}: first connection closed with 1012: ${JSON.stringify(c0.close)}`);
        const closing = c0.msgs.filter(byType('closing'));
        assert.equal(closing.length, 1, `${s.name}: one closing envelope: ${JSON.stringify(c0.msgs.slice(-3))}`);
        assert.equal(closing[0].data.code, 1012);
        assert.equal(c0.msgs.filter((m) => m.type !== 'ping').at(-1).type, 'closing', `${s.name}: closing comes last`);
        const seqs0 = c0.msgs.filter((m) => typeof m.seq === 'number').map((m) => m.seq);
        assert.deepEqual(seqs0, seqs0.map((_, k) => k + 1), `${s.name}: the old epoch's seqs on the first connection, 1.. without a regression (no new-epoch event on an old-epoch connection)`);

        assert.equal(c1.hello.data.recovered, false, `${s.name}: resume across the empty restart is not recovered: ${JSON.stringify(c1.hello)}`);
        assert.notEqual(c1.hello.data.epoch, epoch0, `${s.name}: a new epoch`);
        epoch1 ??= c1.hello.data.epoch;
        assert.equal(c1.hello.data.epoch, epoch1, 'one new epoch on both nodes');
        const rest = c1.msgs.filter((m) => m.type !== 'ping' && m.type !== 'connected');
        assert.equal(rest[0]?.type, 'resync', `${s.name}: resync follows connected: ${JSON.stringify(rest.slice(0, 3))}`);
        assert.equal(rest[0].data.from_seq, 1, `${s.name}: the new epoch's events from seq 1`);
        const seqs1 = rest.slice(1).map((m) => m.seq);
        assert.deepEqual(seqs1, seqs1.map((_, k) => k + 1), `${s.name}: new-epoch seqs 1.. in order on the resumed connection`);
        assert.ok(rest.slice(1).every((m) => m.type === 'chunk' && m.user_id === user), `${s.name}: only the user's events after resync`);

        // Every 200 reached this tab exactly once.
        const got = new Map();
        for (const c of s.conns) for (const m of c.msgs) if (typeof m.seq === 'number') got.set(m.data.i, (got.get(m.data.i) || 0) + 1);
        const missing = ok.filter((x) => !got.has(x.i)).map((x) => `${x.i}(${x.phase},seq ${x.seq})`);
        assert.deepEqual(missing, [], `${s.name}: every publish that got 200 was received`);
        const twice = [...got].filter(([, n]) => n > 1);
        assert.deepEqual(twice, [], `${s.name}: nothing received twice`);
    }
    for (const d of [A, B]) {
        const st = await stats(d.port);
        assertRedisStats(st, { up: true, what: `node ${d.name} (Redis back)` });
        assert.ok(st.broker_reconnects >= 1, `node ${d.name} counted its reconnect: ${st.broker_reconnects}`);
    }
    t.diagnostic(`${okBefore.length} ok before, ${by(503).length} refused, ${okAfter.length} ok after; transport errors: ${log.filter((x) => x.status === 'error').length}; nodes back ${backAfter.join(', ')} ms after the restart`);
});

test('Redis connections dropped but data intact (CLIENT KILL): the nodes reconnect and resubscribe; open tabs stay open, same epoch, and miss nothing, not even events published while their node was unsubscribed', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await redisFor(t);
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const user = uid('blip');
    const tabs = [own(await connect(A.port, { user_id: user })), own(await connect(B.port, { user_id: user }))];
    const published = []; // data.i of every 200, in seq order
    const pub = async (d, i) => {
        const deadline = Date.now() + 8000;
        for (;;) {
            const r = await publish(d.port, { user_id: user, type: 'chunk', data: { i } });
            if (r.status === 200) {
                published.push({ i, seq: r.json.seq });
                return;
            }
            assertJsonError(assert, r, 503); // only "broker down" may refuse it
            if (Date.now() > deadline) assert.fail(`publish ${i} via ${d.name} still 503 after 8 s`);
            await sleep(50);
        }
    };
    let i = 0;
    for (; i < 10; i++) await pub(i % 2 ? B : A, i);

    // 1. Only the subscriber connections: the command connections still publish, so events
    //    go out while the nodes are not subscribed.
    let killedSub = 0;
    for (const r of redis.shards) killedSub += await redisCommand(r.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
    // (only the user's shard has subscriptions: one per node)
    assert.ok(killedSub >= 2, `killed ${killedSub} pubsub connections (one per node)`);
    for (const end = i + 10; i < end; i++) await pub(i % 2 ? B : A, i);
    await waitFor(() => tabs.every((c) => eventsOf(c).length >= i), 8000, `both tabs catching up to ${i} events after the subscriber connections dropped: ${tabs.map((c) => eventsOf(c).length)}`);

    // 2. Every connection of the nodes (commands too).
    let killedAll = 0;
    for (const r of redis.shards) {
        killedAll += await redisCommand(r.port, ['CLIENT', 'KILL', 'TYPE', 'normal']);
        await redisCommand(r.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
    }
    assert.ok(killedAll >= 2 * redis.shards.length, `killed ${killedAll} command connections`);
    for (const end = i + 10; i < end; i++) await pub(i % 2 ? B : A, i);
    // Nothing published after this point: the last events must arrive on their own.
    await waitFor(() => tabs.every((c) => eventsOf(c).length >= i), 8000, `both tabs catching up to ${i} events after every connection dropped: ${tabs.map((c) => eventsOf(c).length)}`);
    await sleep(300);

    assert.equal(published.length, 30);
    assert.deepEqual(published.map((x) => x.seq), published.map((_, k) => k + 1), 'seqs 1..30 (same stream, same epoch)');
    for (const [n, c] of [['A', tabs[0]], ['B', tabs[1]]]) {
        assert.ok(c.isOpen, `tab on ${n} stayed open: ${JSON.stringify(c.closeInfo)}`);
        assert.deepEqual(c.all.filter((m) => m.type === 'closing' || m.type === 'resync'), [], `tab on ${n}: no closing, no resync`);
        assert.deepEqual(eventsOf(c).map((m) => [m.seq, m.data.i]), published.map((x) => [x.seq, x.i]), `tab on ${n}: every event once, in order`);
    }
    const probe = own(await connect(B.port, { user_id: user, last_seq: '30', epoch: tabs[0].hello.data.epoch }));
    assert.equal(probe.hello.data.recovered, true, `same epoch after the reconnects: ${JSON.stringify(probe.hello)}`);
    for (const d of [A, B]) {
        const st = await stats(d.port);
        assertRedisStats(st, { what: `node ${d.name}` });
        assert.ok(st.broker_reconnects >= 1, `node ${d.name} counted its reconnect(s): ${st.broker_reconnects}`);
    }
});

// ==========================================================================================
// 5. Runs and idempotency across nodes

test('run lifecycle across nodes: started on A, tools on B, completed on A; 409s on the other node; GET /v1/runs agrees on both; idempotency keys across nodes (also concurrent)', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const user = uid('runner');
    const cA = own(await connect(A.port, { user_id: user }));
    const cB = own(await connect(B.port, { user_id: user }));
    const run = uid('run');

    const seqs = [];
    const ok = async (d, body) => {
        const r = await publishOk(d.port, body);
        seqs.push(r.seq);
        return r;
    };
    await ok(A, ev(user, 'agent_started', run, { thread: 'th1' }));
    await expect409(B.port, ev(user, 'agent_started', run), 'run_id: run already open');
    await ok(B, ev(user, 'agent_thinking', run));
    await ok(B, ev(user, 'tool_executing', run, { call: 'c1' }));
    await expect409(A.port, ev(user, 'tool_executing', run, { call: 'c1' }), 'data.tool_call_id: already executing in this run');
    await expect409(A.port, ev(user, 'tool_completed', run, { call: 'c2' }), 'data.tool_call_id: not executing in this run');
    // A run lives on its user's shard: another user of that shard is refused by name.
    const intruder = userOnShard(() => uid('intruder'), shardOf(user, testShards()), testShards());
    await expect409(B.port, ev(intruder, 'agent_thinking', run), 'run_id: belongs to another user');

    let ra = await getRun(A.port, run);
    let rb = await getRun(B.port, run);
    assert.equal(ra.status, 200, ra.text);
    assert.equal(rb.status, 200, rb.text);
    assert.deepEqual(ra.json, rb.json, 'both nodes report the same run');
    assert.equal(ra.json.state, 'open');
    assert.equal(ra.json.user_id, user);
    assert.equal(ra.json.thread_id, 'th1');
    assert.deepEqual(ra.json.tools_executing, ['c1']);
    assert.equal(ra.json.events, 3);
    assert.equal(ra.json.last_seq, 3);

    await ok(A, ev(user, 'tool_completed', run, { call: 'c1' }));
    await expect409(B.port, ev(user, 'tool_completed', run, { call: 'c1' }), 'data.tool_call_id: not executing in this run');
    // An array on B: checked in order against the cluster's state, all or nothing.
    await expect409(B.port, [ev(user, 'agent_thinking', run), ev(user, 'tool_completed', run, { call: 'c9' })], 'data.tool_call_id: not executing in this run', 1);
    await ok(A, ev(user, 'agent_completed', run));
    await expect409(B.port, ev(user, 'agent_thinking', run), 'run_id: run closed');
    await expect409(B.port, ev(user, 'agent_started', run), 'run_id: run closed');
    await expect409(A.port, ev(user, 'agent_error', run), 'run_id: run closed');

    ra = await getRun(A.port, run);
    rb = await getRun(B.port, run);
    assert.deepEqual(ra.json, rb.json, 'both nodes report the same closed run');
    assert.equal(ra.json.state, 'closed');
    assert.equal(ra.json.closed_by, 'agent_completed');
    assert.deepEqual(ra.json.tools_executing, []);
    assert.equal(ra.json.events, 5);
    assert.equal(ra.json.last_seq, 5);
    for (const d of [A, B]) assertJsonError(assert, await getRun(d.port, uid('nope')), 404, 'run_id: unknown run');
    // A refused array left nothing: a run opened inside it does not exist.
    const ghost = uid('ghost');
    await expect409(A.port, [ev(user, 'agent_started', ghost), ev(user, 'agent_thinking', run)], 'run_id: run closed', 1);
    for (const d of [A, B]) assert.equal((await getRun(d.port, ghost)).status, 404, `ghost run unknown on ${d.name}`);

    // Idempotency: a key used on A, repeated on B (even with other data): the first seq.
    const first = await ok(A, { user_id: user, type: 'chunk', data: { n: 'first' }, idempotency_key: 'k-1' });
    assert.deepEqual(first, { seq: 6, delivered: 2 });
    const again = await publishOk(B.port, { user_id: user, type: 'chunk', data: { n: 'second' }, idempotency_key: 'k-1' });
    assert.deepEqual(again, { seq: 6, delivered: 0, duplicate: true });
    // The same key for another user is that user's own.
    const otherUser = uid('other');
    assert.deepEqual(await publishOk(B.port, { user_id: otherUser, type: 'chunk', data: {}, idempotency_key: 'k-1' }), { seq: 1, delivered: 0 });
    // The same new key sent to both nodes at once: one publish, the other a duplicate of it.
    const [p1, p2] = await Promise.all([
        publishOk(A.port, { user_id: user, type: 'chunk', data: { n: 'race' }, idempotency_key: 'k-2' }),
        publishOk(B.port, { user_id: user, type: 'chunk', data: { n: 'race' }, idempotency_key: 'k-2' }),
    ]);
    assert.equal(p1.seq, 7, `${JSON.stringify([p1, p2])}`);
    assert.equal(p2.seq, 7, `${JSON.stringify([p1, p2])}`);
    assert.equal([p1, p2].filter((p) => p.duplicate === true).length, 1, `exactly one duplicate: ${JSON.stringify([p1, p2])}`);
    seqs.push(7);
    // A retried agent_started on B with the key used on A: a duplicate, not a 409.
    const run2 = uid('run');
    const s2 = await ok(A, ev(user, 'agent_started', run2, { key: 'start-run2' }));
    assert.deepEqual(await publishOk(B.port, ev(user, 'agent_started', run2, { key: 'start-run2' })), { seq: s2.seq, delivered: 0, duplicate: true });
    await ok(B, ev(user, 'agent_error', run2));

    assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const want = ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed', 'chunk', 'chunk', 'agent_started', 'agent_error'];
    await waitFor(() => eventsOf(cA).length >= 9 && eventsOf(cB).length >= 9, 5000, 'nine events on both tabs');
    await sleep(200);
    for (const c of [cA, cB]) {
        assert.deepEqual(eventsOf(c).map((m) => [m.seq, m.type]), want.map((ty, k) => [k + 1, ty]), 'every accepted event once, in order; no refused or duplicate event');
        assert.deepEqual(eventsOf(c)[5].data, { n: 'first' }, 'the first publish of k-1 is the one delivered');
    }
    for (const d of [A, B]) assert.equal((await stats(d.port)).open_runs, 0, `node ${d.name}: no open run`);
});

test('a direct message with an idempotency key through Redis: a retry on the other node is a duplicate, delivered once, also after the connection closed', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const user = uid('dmkey');
    const c = await connect(A.port, { user_id: user });
    const other = own(await connect(B.port, { user_id: user }));
    const dm = (key, n) => ({ user_id: user, type: 'dm', connection_id: c.connectionId, data: { n }, idempotency_key: key });
    assert.deepEqual(await publishOk(B.port, dm('dm-1', 1)), { delivered: 1 });
    assert.deepEqual(await publishOk(A.port, dm('dm-1', 2)), { delivered: 0, duplicate: true });
    assert.deepEqual(await publishOk(B.port, [dm('dm-2', 3), dm('dm-2', 4)]), [{ delivered: 1 }, { delivered: 0, duplicate: true }]);
    assert.equal((await publishOk(A.port, { user_id: user, type: 'after', data: {} })).seq, 1);
    await waitFor(() => c.all.some((m) => m.type === 'after'), 5000, 'the seq\'d event on the direct tab');
    assert.deepEqual(c.all.filter((m) => m.type === 'dm' || m.type === 'after').map((m) => [m.type, m.data.n, m.seq]),
        [['dm', 1, undefined], ['dm', 3, undefined], ['after', undefined, 1]]);
    await waitFor(() => other.all.some((m) => m.type === 'after'), 5000, 'the seq\'d event on the other tab');
    assert.deepEqual(other.all.filter((m) => m.type === 'dm'), [], 'the other tab got no direct message');
    await c.close();
    await waitFor(async () => (await publish(B.port, dm('dm-3', 5))).status === 404, 5000, 'a new direct message to the closed connection refused');
    assert.deepEqual(await publishOk(B.port, dm('dm-1', 6)), { delivered: 0, duplicate: true });
});

test('--run-timeout 1 with two nodes: a silent run is closed with exactly one agent_error; a run kept alive through node B is not timed out by node A', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2, { extra: ['--run-timeout', '1', '--cleanup-interval', '0.1'] });
    const user = uid('timeout');
    const cA = own(await connect(A.port, { user_id: user }));
    const cB = own(await connect(B.port, { user_id: user }));
    const silent = uid('silent');
    const busy = uid('busy');

    let silentErrAt = null;
    cA.ws.on('message', (data) => {
        const m = JSON.parse(String(data));
        if (m.type === 'agent_error' && m.run_id === silent && silentErrAt === null) silentErrAt = Date.now();
    });
    await publishOk(A.port, ev(user, 'agent_started', silent, { thread: 'th-s' }));
    const silentAt = Date.now();
    await publishOk(A.port, ev(user, 'agent_started', busy));
    // Keep `busy` alive through B (every 0.3 s for 2.4 s): its last event is never 1 s old.
    for (let i = 0; i < 8; i++) {
        await sleep(300);
        const r = await publish(B.port, ev(user, 'agent_thinking', busy));
        assert.equal(r.status, 200, `busy run event ${i} via B: ${r.text} (the run must not time out while events keep coming)`);
    }
    const busyLast = Date.now();
    const errsFor = (c, run) => c.all.filter((m) => m.type === 'agent_error' && m.run_id === run);
    assert.deepEqual(errsFor(cA, busy), [], 'no timeout of the busy run on A while B feeds it');

    const se = errsFor(cA, silent)[0] ?? (await cA.next((m) => m.type === 'agent_error' && m.run_id === silent, 3000, 'silent run timed out'));
    assert.deepEqual(se.data, { error: 'run timed out', timeout_s: 1 });
    assert.equal(se.thread_id, 'th-s');
    assert.equal(se.user_id, user);
    const after = silentErrAt - silentAt;
    assert.ok(after >= 900 && after <= 3000, `the silent run timed out ${after} ms after its only event (--run-timeout 1)`);

    await waitFor(() => errsFor(cA, busy).length > 0, 4000, 'the busy run times out once its events stop');
    const waited = Date.now() - busyLast;
    assert.ok(waited <= 4000, `timed out ${waited} ms after its last event`);
    await sleep(1500); // a second sweeper (the other node) would have published by now

    for (const [n, c] of [['A', cA], ['B', cB]]) {
        assert.equal(errsFor(c, silent).length, 1, `tab on ${n}: exactly one agent_error for the silent run: ${JSON.stringify(errsFor(c, silent))}`);
        assert.equal(errsFor(c, busy).length, 1, `tab on ${n}: exactly one agent_error for the busy run: ${JSON.stringify(errsFor(c, busy))}`);
        const s = eventsOf(c).map((m) => m.seq);
        assert.deepEqual(s, s.map((_, k) => k + 1), `tab on ${n}: seqs 1.. without a gap`);
        assert.equal(s.length, 2 + 8 + 2, `tab on ${n}: 2 starts, 8 thoughts, 2 timeouts`);
    }
    assert.deepEqual(eventsOf(cA), eventsOf(cB), 'both tabs saw the same events');
    for (const run of [silent, busy]) {
        const [ra, rb] = [await getRun(A.port, run), await getRun(B.port, run)];
        assert.equal(ra.status, 200, ra.text);
        assert.deepEqual(ra.json, rb.json, `GET /v1/runs/${run} agrees on both nodes`);
        assert.equal(ra.json.state, 'closed');
        assert.equal(ra.json.closed_by, 'timeout');
    }
    await expect409(B.port, ev(user, 'agent_thinking', silent), 'run_id: run closed');
    for (const d of [A, B]) assert.equal((await stats(d.port)).open_runs, 0);
});

// ==========================================================================================
// 6. Unreachable Redis at start

async function startExpectingExit(args, env = {}) {
    const childEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTCAST_')) childEnv[k] = v;
    Object.assign(childEnv, env);
    const proc = spawn(BIN, ['--listen', `${HOST}:0`, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    proc.stderr.setEncoding('utf8').on('data', (s) => (stderr += s));
    proc.stdout.setEncoding('utf8').on('data', (s) => (stdout += s));
    const startedAt = Date.now();
    const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    try {
        const r = await withTimeout(exited, 8000, `the daemon's exit with ${args.join(' ')}`);
        await sleep(50);
        return { ...r, ms: Date.now() - startedAt, stderr, stdout };
    } catch (err) {
        proc.kill('SIGKILL');
        await withTimeout(exited, 3000, 'exit after SIGKILL').catch(() => {});
        err.message += `\nstderr: ${stderr}`;
        throw err;
    }
}

test('Redis unreachable at start (a closed port): the daemon exits non-zero within a few seconds, stderr naming redis and the address (flag and AGENTCAST_BROKER)', { skip: SKIP, timeout: 60000 }, async (t) => {
    // Control: the same flags with a reachable Redis start a node (so the refusal below is
    // about the unreachable address, not an unknown flag).
    const redis = await sharedRedis();
    const { nodes: [ok] } = await clusterFor(t, redis, 1);
    assert.equal((await healthz(ok.port)).status, 200);

    const port = await freePort(); // nothing listens there now
    const addr = `${HOST}:${port}`;
    for (const [how, args, env] of [
        ['--broker=', [`--broker=redis://${addr}`, '--auth=none', `--redis-prefix=${uniquePrefix('dead')}`], {}],
        ['AGENTCAST_BROKER', ['--auth=none'], { AGENTCAST_BROKER: `redis://${addr}` }],
    ]) {
        const r = await startExpectingExit(args, env);
        assert.equal(r.signal, null, `${how}: exited by itself, not by ${r.signal}; stderr: ${r.stderr}`);
        assert.notEqual(r.code, 0, `${how}: non-zero exit; stderr: ${r.stderr}`);
        assert.ok(r.ms < 6000, `${how}: exited after ${r.ms} ms`);
        assert.match(r.stderr, /redis/i, `${how}: stderr mentions redis: ${r.stderr}`);
        assert.ok(r.stderr.includes(addr), `${how}: stderr names the address ${addr}: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /unknown (flag|option)|unrecognized/i, `${how}: refused for the address, not the flag: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /AddressSanitizer|runtime error:/, r.stderr);
    }
});

test('a node is ready when it logs listening: its first /healthz is 200 and its first /ws upgrade and publish succeed (10 starts)', { skip: SKIP, timeout: 60000 }, async () => {
    const redis = await sharedRedis();
    const prefix = uniquePrefix('ready');
    const bad = [];
    let firstLogs = null;
    for (let k = 0; k < 10; k++) {
        const d = await startDaemon(nodeArgs(redis, prefix));
        try {
            // Right after `event=listening`, all at once.
            const [h, c, p] = await Promise.all([
                healthz(d.port),
                connect(d.port, { user_id: `ready-${k}` }).catch((err) => err),
                publish(d.port, { user_id: `ready-other-${k}`, type: 'chunk', data: {} }),
            ]);
            if (h.status !== 200) bad.push(`start ${k}: first /healthz ${h.status} ${h.text}`);
            if (!(c instanceof WsClient)) bad.push(`start ${k}: first /ws: ${c.message}`);
            else c.terminate();
            if (p.status !== 200) bad.push(`start ${k}: first publish ${p.status} ${p.text}`);
            if (bad.length && firstLogs === null) firstLogs = d.logs.slice(0, 6).join('\n');
        } finally {
            await d.stop();
        }
    }
    assert.deepEqual(bad, [], `a node that logged listening must serve; first failing node's log:\n${firstLogs}`);
});

// ==========================================================================================
// 7. Isolation

test('isolation: a node with no connection of a user hands none of its events to anyone (deliveries stay 0 on the idle node), and no user sees another user\'s events', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    const { nodes: [A, B, C], own } = await clusterFor(t, redis, 3);
    const u1 = uid('iso1');
    const u2 = uid('iso2');
    const a = [own(await connect(A.port, { user_id: u1 })), own(await connect(A.port, { user_id: u1 }))];
    const b = [own(await connect(B.port, { user_id: u2 }))];

    const N = 40;
    const jobs = [];
    for (let i = 0; i < N; i++) {
        // u1's events through B and C (neither has a u1 connection); u2's through A and C.
        jobs.push(publishOk((i % 2 ? B : C).port, { user_id: u1, type: 'chunk', data: { who: u1, i } }));
        jobs.push(publishOk((i % 2 ? A : C).port, { user_id: u2, type: 'chunk', data: { who: u2, i } }));
    }
    const replies = await Promise.all(jobs);
    replies.forEach((r, k) => assert.equal(r.delivered, k % 2 === 0 ? 2 : 1, `delivered counts the user's connections cluster-wide: ${JSON.stringify(r)}`));

    await waitFor(() => a.every((c) => eventsOf(c).length >= N) && eventsOf(b[0]).length >= N, 5000, 'every tab receiving its user\'s events');
    await sleep(300);
    for (const [user, tabs] of [[u1, a], [u2, b]]) {
        for (const c of tabs) {
            const evs = eventsOf(c);
            assert.equal(evs.length, N, `${user}: exactly ${N} events`);
            assert.ok(evs.every((m) => m.user_id === user && m.data.who === user), `${user} sees only its own events: ${JSON.stringify(evs.find((m) => m.user_id !== user))}`);
            assert.deepEqual(evs.map((m) => m.seq), Array.from({ length: N }, (_, k) => k + 1));
            assert.deepEqual(evs.map((m) => m.data.i).sort((x, y) => x - y), Array.from({ length: N }, (_, k) => k));
        }
    }
    const [da, db, dc] = [await deliveriesOf(A), await deliveriesOf(B), await deliveriesOf(C)];
    assert.equal(dc, 0, 'node C (no connections) delivered nothing');
    assert.equal(da, 2 * N, 'node A delivered u1\'s events to its two tabs, nothing of u2\'s');
    assert.equal(db, N, 'node B delivered u2\'s events to its one tab, nothing of u1\'s');
    const m = await request(C.port, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.text, /^agentcast_frames_delivered_total 0$/m, 'node C frames_delivered_total is 0');
    const sc = await stats(C.port);
    assert.equal(sc.total_connections, 0);
    assert.equal(sc.queued_bytes, 0);
});

test('--redis-prefix namespaces keys and channels: two clusters on one Redis with the same user id never see each other, each has its own seqs and runs; every key in Redis is under a test prefix', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await sharedRedis();
    const X = await clusterFor(t, redis, 2);
    const Y = await clusterFor(t, redis, 1);
    assert.notEqual(X.prefix, Y.prefix);
    const user = 'same-user-in-both-clusters';
    const tx = X.own(await connect(X.nodes[1].port, { user_id: user }));
    const ty = Y.own(await connect(Y.nodes[0].port, { user_id: user }));
    for (let i = 0; i < 5; i++) assert.deepEqual(await publishOk(X.nodes[0].port, { user_id: user, type: 'chunk', data: { c: 'X', i } }), { seq: i + 1, delivered: 1 });
    for (let i = 0; i < 3; i++) assert.deepEqual(await publishOk(Y.nodes[0].port, { user_id: user, type: 'chunk', data: { c: 'Y', i } }), { seq: i + 1, delivered: 1 });
    await publishOk(X.nodes[0].port, ev(user, 'agent_started', 'shared-run-id'));
    // The same run id in the other cluster is unknown there, and can be started there too.
    assert.equal((await getRun(Y.nodes[0].port, 'shared-run-id')).status, 404);
    await publishOk(Y.nodes[0].port, ev(user, 'agent_started', 'shared-run-id'));
    await waitFor(() => eventsOf(tx).length >= 6 && eventsOf(ty).length >= 4, 5000, 'events in both clusters');
    await sleep(300);
    assert.deepEqual(eventsOf(tx).map((m) => [m.seq, m.data.c ?? m.type]), [[1, 'X'], [2, 'X'], [3, 'X'], [4, 'X'], [5, 'X'], [6, 'agent_started']]);
    assert.deepEqual(eventsOf(ty).map((m) => [m.seq, m.data.c ?? m.type]), [[1, 'Y'], [2, 'Y'], [3, 'Y'], [4, 'agent_started']]);

    const keys = await redisKeysAll(redis, '*');
    assert.ok(keys.some((k) => k.startsWith(X.prefix)), `keys under ${X.prefix}: ${JSON.stringify(keys.slice(0, 20))}`);
    assert.ok(keys.some((k) => k.startsWith(Y.prefix)), `keys under ${Y.prefix}`);
    const stray = keys.filter((k) => !k.startsWith('actest-'));
    assert.deepEqual(stray, [], 'every key carries its cluster\'s prefix');
    const channels = [];
    for (const r of redis.shards) channels.push(...(await redisCommand(r.port, ['PUBSUB', 'CHANNELS'])));
    const strayCh = channels.filter((c) => !c.startsWith('actest-'));
    assert.deepEqual(strayCh, [], 'every channel carries its cluster\'s prefix');
});

// ==========================================================================================
// 8. Flag forms, /DB and the password

test('--broker redis://HOST:PORT/DB (two-argument form), AGENTCAST_BROKER, AGENTCAST_REDIS_PASSWORD: both nodes up on a password-protected Redis, keys in that DB, stats report the redis broker', { skip: SKIP, timeout: 60000 }, async (t) => {
    const password = `pw-${process.pid}-${Date.now()}`;
    const redis = await redisFor(t, { password });
    const prefix = uniquePrefix('db');
    const url = redis.urlFor(2);
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2, {
        prefix,
        env: { AGENTCAST_REDIS_PASSWORD: password },
        perNode: [{ brokerForm: 'space', db: 2 }, { brokerForm: 'env', env: { AGENTCAST_BROKER: url } }],
    });
    for (const d of [A, B]) {
        const h = await healthz(d.port);
        assert.equal(h.status, 200, h.text);
        assert.deepEqual(h.json, { status: 'ok', broker: 'up' });
        const s = await stats(d.port);
        assertRedisStats(s, { what: `node ${d.name}` });
        assert.equal(s.broker_reconnects, 0);
    }
    const user = uid('db');
    const ca = own(await connect(A.port, { user_id: user }));
    const cb = own(await connect(B.port, { user_id: user }));
    assert.deepEqual(await publishOk(A.port, { user_id: user, type: 'chunk', data: { n: 1 } }), { seq: 1, delivered: 2 });
    assert.deepEqual(await publishOk(B.port, { user_id: user, type: 'chunk', data: { n: 2 } }), { seq: 2, delivered: 2 });
    for (const c of [ca, cb]) {
        assert.equal((await c.next((m) => m.seq === 1, 3000, 'seq 1')).data.n, 1);
        assert.equal((await c.next((m) => m.seq === 2, 3000, 'seq 2')).data.n, 2);
    }
    const inDb2 = await redisKeysAll(redis, `${prefix}*`, { password, db: 2 });
    const inDb0 = await redisKeysAll(redis, `${prefix}*`, { password, db: 0 });
    assert.ok(inDb2.length > 0, 'the nodes keep their keys in DB 2');
    assert.deepEqual(inDb0, [], 'nothing in DB 0');
    // The broker's rtt percentiles have samples now.
    const s = await stats(A.port);
    assert.ok(s.broker_rtt_us.max > 0, `broker_rtt_us measured: ${JSON.stringify(s.broker_rtt_us)}`);
});

test('publisher socket through Redis: 10,000 messages pipelined without waiting (past the 4,096-pending pause) are answered once each, in order, with seqs 1..10,000, and the user gets every event once, in order', { skip: SKIP, timeout: 90000 }, async (t) => {
    const redis = await sharedRedis();
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const user = uid('pipe');
    const N = 10000;
    const got = [];
    const tab = await openUserWs(B.port, { user_id: user }, { onMessage: (m) => { if (m.type === 'chunk') got.push(m); } });
    own(tab.ws);
    const agent = own(await agentSocket(A.port));
    const replies = agent.all.filter((m) => m.type !== 'ping'); // filled as answers arrive
    for (let i = 0; i < N; i++) {
        // Bad ones in between: answered at their turn, not before the pending ones.
        if (i % 1000 === 500) agent.send(JSON.stringify({ user_id: user, type: 'chunk', data: 7 }));
        agent.send(JSON.stringify({ user_id: user, type: 'chunk', data: { i } }));
    }
    const bad = Math.floor(N / 1000);
    const answers = () => agent.all.filter((m) => m.type !== 'ping');
    await waitFor(() => answers().length >= N + bad, 60000, `${N + bad} answers (have ${answers().length})`, 50);
    replies.push(...answers());
    await waitFor(() => got.length >= N, 20000, `${N} events at the tab (have ${got.length})`, 50);
    await sleep(200);
    assert.equal(replies.length, N + bad, 'one answer per message');
    let seq = 0;
    for (let k = 0; k < replies.length; k++) {
        const r = replies[k];
        if (r.error !== undefined) {
            assert.equal(r.status, 400, `answer ${k}: ${JSON.stringify(r)}`);
            assert.equal(replies[k - 1].seq % 1000, 500, `the bad message's answer comes right after the 500th of its thousand (answer ${k})`);
            continue;
        }
        assert.equal(r.seq, ++seq, `answers in message order: answer ${k} ${JSON.stringify(r)}`);
        assert.equal(r.delivered, 1);
    }
    assert.equal(seq, N);
    assert.equal(got.length, N, 'every event once');
    assert.deepEqual(got.map((m) => m.data.i), Array.from({ length: N }, (_, k) => k), 'in publish order');
    assert.deepEqual(got.map((m) => m.seq), Array.from({ length: N }, (_, k) => k + 1));
});
