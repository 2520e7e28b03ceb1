// The redis broker on several shards (--broker=redis://A,redis://B): a user's keys live on the
// shard the consistent hash of its id picks (the same on every node, and the same as
// shardOf() here); one shard down refuses only its users (503) while /healthz names it; a
// batch across shards is answered in order and refused as a whole on every shard. Also (on
// one Redis) the seq counter outliving the history (--seq-ttl > --history-ttl).
//
// Each test starts its own redis-servers (no persistence) on free loopback ports and its own
// nodes under a unique --redis-prefix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { BIN, withTimeout, connect, publish, publishOk, assertJsonError, sleep, uid, waitFor } from './helpers.mjs';
import { getRun, stats } from './helpers3.mjs';
import { redisFor, redisSkipReason, clusterFor, freePort, healthz, redisKeys, redisCommand, userOnShard } from './redis_helpers.mjs';

const SKIP = redisSkipReason();

const eventsOf = (c) => c.all.filter((m) => typeof m.seq === 'number');
const chunk = (user, data = {}) => ({ user_id: user, type: 'chunk', data });

test('keys of a user live on the shard its id hashes to, the same on every node (and as shardOf computes it)', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await redisFor(t, {}, 2);
    const { prefix, nodes: [A, B] } = await clusterFor(t, redis, 2);
    const users = [0, 1, 0, 1].map((s, i) => userOnShard(() => uid(`k${i}`), s, 2));
    for (const [i, u] of users.entries()) {
        assert.deepEqual(await publishOk((i % 2 ? A : B).port, chunk(u)), { seq: 1, delivered: 0 });
        assert.deepEqual(await publishOk((i % 2 ? B : A).port, chunk(u)), { seq: 2, delivered: 0 });
    }
    for (const [s, r] of redis.shards.entries()) {
        const keys = await redisKeys(r.port, `${prefix}u:*`);
        const want = users.filter((_, i) => [0, 1, 0, 1][i] === s).map((u) => `${prefix}u:${u}`);
        assert.deepEqual(keys.sort(), want.sort(), `shard ${s} holds exactly its users' streams`);
    }
});

test('one shard stopped: its users get 503 and the other shard\'s users 200 and their events; /healthz 200 "partial" names the down shard; back (empty): its users resume with resync, and every 200 was received once, in order', { skip: SKIP, timeout: 90000 }, async (t) => {
    const redis = await redisFor(t, {}, 2);
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const [down, alive] = redis.shards;
    const u0 = userOnShard(() => uid('s0'), 0, 2);
    const u1 = userOnShard(() => uid('s1'), 1, 2);
    const tab0 = own(await connect(A.port, { user_id: u0 }));
    const tabs1 = [own(await connect(A.port, { user_id: u1 })), own(await connect(B.port, { user_id: u1 }))];
    let n1 = 0;
    for (let i = 0; i < 4; i++) {
        const d = i % 2 ? B : A;
        assert.deepEqual(await publishOk(d.port, chunk(u0, { i })), { seq: i + 1, delivered: 1 });
        assert.deepEqual(await publishOk(d.port, chunk(u1, { i: n1 })), { seq: ++n1, delivered: 2 });
    }
    await waitFor(() => eventsOf(tab0).length === 4, 5000, 'u0 tab got its 4 events');

    await down.stop();
    for (const d of [A, B]) {
        await waitFor(async () => (await healthz(d.port)).json?.shards_down !== undefined, 8000, `node ${d.name} notices the down shard`);
        const h = await healthz(d.port);
        assert.equal(h.status, 200, h.text);
        assert.deepEqual(h.json, { status: 'degraded', broker: 'partial', shards_down: [down.addr] });
        const s = await stats(d.port);
        assert.equal(s.broker_up, true);
        assert.deepEqual(s.broker_shards.map((x) => [x.addr, x.up]), [[down.addr, false], [alive.addr, true]]);
    }
    for (let i = 0; i < 6; i++) {
        const d = i % 2 ? B : A;
        assertJsonError(assert, await publish(d.port, chunk(u0, { lost: i })), 503);
        assert.deepEqual(await publishOk(d.port, chunk(u1, { i: n1 })), { seq: ++n1, delivered: 2 });
    }
    // A batch that needs the down shard is refused whole: the live shard writes nothing.
    assertJsonError(assert, await publish(A.port, [chunk(u1, { never: 1 }), chunk(u0, { never: 2 })]), 503);
    assert.deepEqual(await publishOk(B.port, chunk(u1, { i: n1 })), { seq: ++n1, delivered: 2 });
    // New tabs: refused for the down shard's user (1013: try again), welcome for the other's.
    const refused = own(await connect(B.port, { user_id: u0 }, { waitConnected: false }));
    assert.equal((await refused.waitClose(5000)).code, 1013);
    assert.equal(refused.all.filter((m) => m.type === 'connected').length, 0, 'never greeted');
    const late = own(await connect(B.port, { user_id: u1 }));
    assert.equal(late.hello.type, 'connected');
    tabs1.push(late);
    assert.deepEqual(await publishOk(A.port, chunk(u1, { i: n1 })), { seq: ++n1, delivered: 3 });

    await down.restart();
    for (const d of [A, B]) {
        await waitFor(async () => (await healthz(d.port)).json?.status === 'ok', 10000, `node ${d.name} /healthz ok after the shard came back`);
        assert.deepEqual((await healthz(d.port)).json, { status: 'ok', broker: 'up' });
    }
    // u0's stream came back empty: its tab is asked to resume (1012), and gets resync.
    const closed = await tab0.waitClose(8000);
    assert.equal(closed.code, 1012, JSON.stringify(closed));
    const again = own(await connect(A.port, { user_id: u0, last_seq: '4', epoch: tab0.hello.data.epoch }));
    assert.equal(again.hello.data.recovered, false);
    assert.notEqual(again.hello.data.epoch, tab0.hello.data.epoch);
    await again.next((m) => m.type === 'resync', 3000, 'resync after the empty shard');
    assert.deepEqual(await publishOk(B.port, chunk(u0, { after: 1 })), { seq: 1, delivered: 1 });
    assert.equal((await again.next((m) => m.seq === 1, 3000, 'u0 seq 1 in the new epoch')).data.after, 1);

    // The other shard's users: every 200 received once, in order, by every tab open then.
    await waitFor(() => tabs1.slice(0, 2).every((c) => eventsOf(c).length >= n1), 5000, 'u1 tabs caught up');
    await sleep(200);
    for (const c of tabs1.slice(0, 2)) {
        assert.equal(c.closeInfo, null, 'the live shard\'s tabs stay open');
        assert.deepEqual(eventsOf(c).map((m) => m.seq), Array.from({ length: n1 }, (_, k) => k + 1));
        assert.deepEqual(eventsOf(c).map((m) => m.data.i), Array.from({ length: n1 }, (_, k) => k));
    }
});

test('a batch across shards is answered in order; an event refused on one shard (409) or by the node (400) refuses the whole batch on every shard; idempotency keys make a repeated batch exact', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await redisFor(t, {}, 2);
    const { nodes: [A, B], own } = await clusterFor(t, redis, 2);
    const a0 = userOnShard(() => uid('a0'), 0, 2);
    const b0 = userOnShard(() => uid('b0'), 0, 2);
    const a1 = userOnShard(() => uid('a1'), 1, 2);
    const tabs = {};
    for (const u of [a0, b0, a1]) tabs[u] = own(await connect(A.port, { user_id: u }));

    let r = await publishOk(B.port, [chunk(a0, { n: 0 }), chunk(a1, { n: 1 }), chunk(a0, { n: 2 }), chunk(a1, { n: 3 }), chunk(b0, { n: 4 }), chunk(a1, { n: 5 })]);
    assert.deepEqual(r.map((x) => x.seq), [1, 1, 2, 2, 1, 3]);
    assert.deepEqual(r.map((x) => x.delivered), [1, 1, 1, 1, 1, 1]);
    await waitFor(() => eventsOf(tabs[a1]).length === 3 && eventsOf(tabs[a0]).length === 2, 3000, 'batch delivered');
    assert.deepEqual(eventsOf(tabs[a1]).map((m) => [m.seq, m.data.n]), [[1, 1], [2, 3], [3, 5]]);
    assert.deepEqual(eventsOf(tabs[a0]).map((m) => [m.seq, m.data.n]), [[1, 0], [2, 2]]);

    // Runs on both shards in one batch.
    const r0 = uid('run0');
    const r1 = uid('run1');
    const ev = (user, type, run, data) => ({ user_id: user, type, run_id: run, data });
    r = await publishOk(A.port, [
        ev(a0, 'agent_started', r0, { agent: 'x' }),
        ev(a1, 'agent_started', r1, { agent: 'y' }),
        ev(a0, 'agent_thinking', r0, { thought: 't' }),
        ev(a1, 'agent_completed', r1, { result: 'done' }),
    ]);
    assert.deepEqual(r.map((x) => x.seq), [3, 4, 4, 5]);

    // Refused on shard 1 (index 2): shard 0 writes nothing, though its events come first.
    let bad = await publish(B.port, [chunk(a0, { bad: 1 }), ev(a0, 'agent_completed', r0, { result: 'no' }), ev(a1, 'agent_thinking', r1, { thought: 'late' })]);
    assertJsonError(assert, bad, 409, 'run_id: run closed');
    assert.equal(bad.json.index, 2, bad.text);
    // Refused on shard 0 (index 1), valid on shard 1.
    bad = await publish(A.port, [chunk(a1, { bad: 2 }), ev(b0, 'agent_thinking', r0, { thought: 'x' })]);
    assertJsonError(assert, bad, 409, 'run_id: belongs to another user');
    assert.equal(bad.json.index, 1, bad.text);
    // Refused by the node before any shard (a reserved type).
    bad = await publish(A.port, [chunk(a0, { bad: 3 }), { user_id: a1, type: 'resync', data: {} }]);
    assert.equal(bad.status, 400, bad.text);
    const run0 = await getRun(B.port, r0);
    assert.equal(run0.status, 200, JSON.stringify(run0));
    assert.equal(run0.json.state, 'open');
    assert.equal(run0.json.events, 2);
    assert.equal((await getRun(A.port, r1)).json.state, 'closed');
    r = await publishOk(B.port, [chunk(a1, { n: 'next' }), chunk(a0, { n: 'next' })]);
    assert.deepEqual(r.map((x) => x.seq), [6, 5], 'no seq taken by a refused batch');
    await sleep(200);
    for (const u of [a0, a1]) assert.deepEqual(eventsOf(tabs[u]).filter((m) => m.data.bad !== undefined), [], `${u}: nothing of a refused batch`);

    // A direct message (connection_id) in a batch across shards: to that tab only, no seq;
    // one to a connection that is not open refuses the batch (404) on both shards.
    const direct = { ...chunk(a0, { direct: 1 }), connection_id: tabs[a0].hello.data.connection_id };
    r = await publishOk(B.port, [chunk(a1, { n: 'd' }), direct]);
    assert.deepEqual(r, [{ seq: 7, delivered: 1 }, { delivered: 1 }]);
    assert.equal((await tabs[a0].next((m) => m.data?.direct === 1, 3000, 'the direct message')).seq, undefined);
    bad = await publish(A.port, [chunk(a1, { bad: 4 }), { ...direct, connection_id: 'ffffffffffffffff' }]);
    assertJsonError(assert, bad, 404);
    assert.equal(bad.json.index, 1, bad.text);

    // Idempotency keys across shards: the same batch again is answered with the same seqs.
    const keyed = [{ ...chunk(a0, { k: 1 }), idempotency_key: 'k1' }, { ...chunk(a1, { k: 1 }), idempotency_key: 'k1' }];
    const first = await publishOk(A.port, keyed);
    const second = await publishOk(B.port, keyed);
    assert.deepEqual(first.map((x) => x.seq), [6, 8]);
    assert.deepEqual(second, [{ seq: 6, delivered: 0, duplicate: true }, { seq: 8, delivered: 0, duplicate: true }]);
});

test('redis broker: the seq counter outlives the history (--history-ttl 1, --seq-ttl 60): after the history expired, the next seq follows the last one; last_seq=0 gets recovered:false + resync, never a silent gap', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await redisFor(t, {}, 1);
    const { prefix, nodes: [A], own } = await clusterFor(t, redis, 1, { extra: ['--history-ttl', '1', '--seq-ttl', '60'] });
    const user = uid('ttl');
    for (let i = 1; i <= 3; i++) assert.deepEqual(await publishOk(A.port, chunk(user, { i })), { seq: i, delivered: 0 });
    const ukey = `${prefix}u:${user}`;
    const hkey = `${prefix}h:${user}`;
    const epoch = await redisCommand(redis.port, ['HGET', ukey, 'epoch']);
    assert.ok((await redisCommand(redis.port, ['PTTL', ukey])) > 1000, 'the counter is kept for the seq ttl');
    const hTtl = await redisCommand(redis.port, ['PTTL', hkey]);
    assert.ok(hTtl > 0 && hTtl <= 1000 + 1000 / 16, `the history for the history ttl (and at most 1/16 more): ${hTtl}`);
    await waitFor(async () => (await redisCommand(redis.port, ['EXISTS', hkey])) === 0, 5000, 'the history expired', 100);
    assert.equal(await redisCommand(redis.port, ['HGET', ukey, 'epoch']), epoch, 'same stream');

    assert.deepEqual(await publishOk(A.port, chunk(user, { i: 4 })), { seq: 4, delivered: 0 });
    const fromZero = own(await connect(A.port, { user_id: user, last_seq: '0' }));
    assert.equal(fromZero.hello.data.recovered, false);
    assert.equal(fromZero.hello.data.epoch, epoch);
    await fromZero.next((m) => m.type === 'resync', 3000, 'resync for last_seq=0');
    assert.equal((await fromZero.next((m) => m.seq === 4, 3000, 'the retained event')).data.i, 4);
    const older = own(await connect(A.port, { user_id: user, last_seq: '2', epoch }));
    assert.equal(older.hello.data.recovered, false);
    await older.next((m) => m.type === 'resync', 3000, 'resync for last_seq=2');
    const whole = own(await connect(A.port, { user_id: user, last_seq: '3', epoch }));
    assert.equal(whole.hello.data.recovered, true);
    assert.equal((await whole.next((m) => m.seq === 4, 3000, 'seq 4 replayed')).data.i, 4);
    await sleep(200);
    for (const c of [fromZero, older, whole]) assert.deepEqual(eventsOf(c).map((m) => m.seq), [4], 'only what is retained, no seq reused');
});

/** Runs the daemon expecting it to exit at start: {code, stderr}. */
async function startFails(args) {
    const proc = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d) => (stderr += d));
    const [code] = await withTimeout(new Promise((resolve) => proc.on('exit', (...a) => resolve(a))), 8000, `agentcastd ${args.join(' ')} exits`).catch((err) => {
        proc.kill('SIGKILL');
        throw err;
    });
    return { code, stderr };
}

test('bad shard lists are refused at start with the reason: a shard listed twice, an empty entry, redis+cluster:// naming a Redis that is no cluster, one shard of two unreachable', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await redisFor(t, {}, 1);
    const closed = `redis://127.0.0.1:${await freePort()}`;
    for (const [url, why] of [
        [`${redis.url},${redis.url}`, /listed twice/],
        [`${redis.url},`, /expected memory or redis:\/\/HOST:PORT\[\/DB\] \(comma-separated for shards\)/],
        [`redis+cluster://${redis.addr}`, /CLUSTER SLOTS: .*is it a Redis Cluster\?/],
        [`${redis.url},${closed}`, new RegExp(`cannot reach redis at ${closed.slice(8)}`)],
    ]) {
        const r = await startFails([`--broker=${url}`, '--auth=none', '--listen', '127.0.0.1:0']);
        assert.notEqual(r.code, 0, `${url}: non-zero exit; stderr: ${r.stderr}`);
        assert.match(r.stderr, why, url);
    }
});

test('redis broker: retained envelopes of plain events carry a NUL where the seq goes; a node resumes a user exactly across history trimming (--history-size 7, --history-max-bytes 4096): from inside a batch of several events, at its first and last event, at single events, at the newest, just before the oldest, and too old (resync); a keyed event (whole envelope) in between', { skip: SKIP, timeout: 60000 }, async (t) => {
    const redis = await redisFor(t, {}, 1);
    const { prefix, nodes: [A, B], own } = await clusterFor(t, redis, 2, { extra: ['--history-size', '7', '--history-max-bytes', '4096'] });
    const user = uid('trim');
    const live = own(await connect(A.port, { user_id: user }));
    const epoch = live.hello.data.epoch;
    // Seqs 1..13 in bodies of several events and of one; 10 has an idempotency key.
    for (const body of [[1, 2, 3], [4], [5], [6, 7, 8, 9], [10], [11, 12, 13]]) {
        const events = body.map((i) => (i === 10 ? { ...chunk(user, { i }), idempotency_key: 'k10' } : chunk(user, { i })));
        const r = await publishOk(B.port, events.length === 1 ? events[0] : events);
        const got = Array.isArray(r) ? r : [r];
        assert.deepEqual(got.map((x) => x.seq), body, 'seqs dense and in order');
        for (const x of got) assert.equal(x.delivered, 1);
    }
    await live.next((m) => m.seq === 13, 3000, 'seq 13 live');
    const sent = new Map(eventsOf(live).map((m) => [m.seq, JSON.stringify(m)]));
    assert.deepEqual([...sent.keys()], Array.from({ length: 13 }, (_, k) => k + 1), 'every event once, in order');
    for (const [seq, env] of sent) assert.equal(JSON.parse(env).data.i, seq);

    // Redis holds seqs 7..13: plain ones with a NUL for the seq, the keyed one whole.
    const kept = await redisCommand(redis.port, ['LRANGE', `${prefix}h:${user}`, '0', '-1']);
    assert.equal(kept.length, 7, 'LTRIM to --history-size');
    kept.forEach((e, k) => {
        const seq = 7 + k;
        if (seq === 10) assert.ok(!e.includes('\u0000') && e.includes('"seq":10'), `the keyed event whole: ${e}`);
        else assert.equal(e.split('\u0000').length, 2, `seq ${seq}: one NUL: ${JSON.stringify(e)}`);
    });

    for (const after of [13, 12, 11, 10, 9, 8, 7, 6]) {
        const c = own(await connect(B.port, { user_id: user, last_seq: String(after), epoch }));
        assert.equal(c.hello.data.recovered, true, `last_seq ${after}: recovered`);
        if (after < 13) await c.next((m) => m.seq === 13, 3000, `last_seq ${after}: replayed up to 13`);
        await sleep(100);
        const got = eventsOf(c);
        assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 13 - after }, (_, k) => after + 1 + k), `last_seq ${after}: what follows, once`);
        for (const m of got) assert.equal(JSON.stringify(m), sent.get(m.seq), `last_seq ${after}: seq ${m.seq} as it was sent live`);
        c.close();
    }
    const old = own(await connect(B.port, { user_id: user, last_seq: '5', epoch }));
    assert.equal(old.hello.data.recovered, false, 'last_seq 5: trimmed away');
    await old.next((m) => m.type === 'resync', 3000, 'resync');
    await old.next((m) => m.seq === 13, 3000, 'the retained events');
    assert.deepEqual(eventsOf(old).map((m) => m.seq), [7, 8, 9, 10, 11, 12, 13]);
    for (const m of eventsOf(old)) assert.equal(JSON.stringify(m), sent.get(m.seq));

    // Live again after the replays: the next plain event reaches both nodes' tabs.
    const b = own(await connect(B.port, { user_id: user, last_seq: '13', epoch }));
    assert.deepEqual(await publishOk(A.port, chunk(user, { i: 14 })), { seq: 14, delivered: 3 });
    for (const c of [live, b, old]) assert.equal((await c.next((m) => m.seq === 14, 3000, 'seq 14')).data.i, 14);
});
