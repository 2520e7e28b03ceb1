// The redis broker on a real Redis Cluster (--broker=redis+cluster://SEED): three masters
// started by the test (redis-server --cluster-enabled yes, joined with redis-cli --cluster
// create), two agentcastd nodes. A user's keys carry the user's hash tag ({TAG}USER, one
// slot), each master its own tag for its heartbeats and runs; a publish body is split per
// master. Checked: users land on every master, order and delivery across nodes, a body across
// masters answered in order and refused whole, runs across nodes and GET /v1/runs, idempotency,
// cross-node resume, the cluster-wide per-user cap, direct messages, and the keys' slots.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { HOST, connect, publish, publishOk, assertJsonError, sleep, uid, waitFor, withTimeout } from './helpers.mjs';
import { getRun } from './helpers3.mjs';
import { RedisServer, redisSkipReason, clusterFor, healthz, redisKeys, redisCommand } from './redis_helpers.mjs';

const REDIS_CLI = process.env.REDIS_CLI_BIN || '/usr/bin/redis-cli';
const SKIP = redisSkipReason();
const eventsOf = (c) => c.all.filter((m) => typeof m.seq === 'number');
const chunk = (user, data = {}) => ({ user_id: user, type: 'chunk', data });

/** Three masters, no replicas; resolves {url, shards} once every one says cluster_state:ok. */
async function redisClusterFor(t) {
    const masters = [];
    t.after(() => Promise.all(masters.map((m) => m.dispose())));
    for (let i = 0; i < 3; i++) {
        const m = new RedisServer({ extraArgs: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '5000'] });
        masters.push(m);
        await m.start();
    }
    const cli = spawn(REDIS_CLI, ['--cluster', 'create', ...masters.map((m) => m.addr), '--cluster-replicas', '0', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    cli.stdout.on('data', (d) => (out += d));
    cli.stderr.on('data', (d) => (out += d));
    const [code] = await withTimeout(new Promise((resolve) => cli.on('exit', (...a) => resolve(a))), 20000, 'redis-cli --cluster create');
    assert.equal(code, 0, `redis-cli --cluster create: ${out}`);
    for (const m of masters) {
        await waitFor(async () => /cluster_state:ok/.test(await m.command(['CLUSTER', 'INFO'])), 15000, `${m.addr}: cluster_state:ok`, 100);
    }
    return { url: `redis+cluster://${masters[0].addr}`, shards: masters, urlFor: () => { throw new Error('no /DB in a cluster'); } };
}

test('Redis Cluster (redis+cluster://, 3 masters, 2 nodes): users on every master, order across nodes, bodies across masters in order and all or nothing, runs, idempotency, resume on the other node, the cluster-wide cap, direct messages', { skip: SKIP, timeout: 90000 }, async (t) => {
    const cluster = await redisClusterFor(t);
    const { prefix, nodes: [A, B], own } = await clusterFor(t, cluster, 2, { extra: ['--max-conns-per-user', '2'] });
    for (const d of [A, B]) assert.deepEqual((await healthz(d.port)).json, { status: 'ok', broker: 'up' });

    // 30 users, each with a tab on each node, 4 events each through both nodes, singles and
    // bodies naming several users (so several masters).
    const users = Array.from({ length: 30 }, (_, i) => uid(`rc${i}`));
    const tabs = new Map();
    for (const u of users) tabs.set(u, [own(await connect(A.port, { user_id: u })), own(await connect(B.port, { user_id: u }))]);
    for (const [i, u] of users.entries()) assert.deepEqual(await publishOk((i % 2 ? A : B).port, chunk(u, { n: 1 })), { seq: 1, delivered: 2 });
    for (let k = 0; k < users.length; k += 6) {
        const body = users.slice(k, k + 6).flatMap((u) => [chunk(u, { n: 2 }), chunk(u, { n: 3 })]);
        const r = await publishOk((k % 12 ? A : B).port, body);
        assert.deepEqual(r.map((x) => x.seq), body.map((e) => e.data.n));
    }
    for (const u of users) {
        for (const c of tabs.get(u)) {
            await waitFor(() => eventsOf(c).length === 3, 5000, `${u}: 3 events`);
            assert.deepEqual(eventsOf(c).map((m) => [m.seq, m.data.n]), [[1, 1], [2, 2], [3, 3]]);
        }
    }
    // Every master holds some users' streams, each under the user's tag: one slot per user.
    const perMaster = [];
    for (const m of cluster.shards) {
        const keys = await redisKeys(m.port, `${prefix}u:*`);
        perMaster.push(keys.length);
        for (const key of keys) {
            assert.match(key, /^[^{]*u:\{[0-9a-f]{8}\}/, key);
            const user = key.slice(key.indexOf('}') + 1);
            const slot = await m.command(['CLUSTER', 'KEYSLOT', key]);
            assert.equal(await m.command(['CLUSTER', 'KEYSLOT', key.replace('u:', 'h:')]), slot, `${user}: u and h in one slot`);
        }
    }
    assert.ok(perMaster.every((n) => n > 0), `users on every master: ${perMaster}`);
    assert.equal(perMaster.reduce((a, b) => a + b, 0), users.length);

    // Runs across nodes, on users of different masters in one body.
    const [u1, u2] = users;
    const r1 = uid('run');
    const r2 = uid('run');
    const ev = (user, type, run, data) => ({ user_id: user, type, run_id: run, data });
    await publishOk(A.port, [ev(u1, 'agent_started', r1, { agent: 'a' }), ev(u2, 'agent_started', r2, { agent: 'b' })]);
    await publishOk(B.port, ev(u1, 'tool_executing', r1, { tool: 'x', tool_call_id: 'c1' }));
    for (const d of [A, B]) {
        const run = await getRun(d.port, r1);
        assert.equal(run.status, 200, JSON.stringify(run));
        assert.equal(run.json.user_id, u1);
        assert.deepEqual(run.json.tools_executing, ['c1']);
    }
    // A body refused on one master writes nothing on the others.
    const bad = await publish(B.port, [chunk(u2, { bad: 1 }), ev(u1, 'tool_completed', r1, { tool: 'x', tool_call_id: 'nope', result: 1 })]);
    assertJsonError(assert, bad, 409, 'data.tool_call_id: not executing in this run');
    assert.equal(bad.json.index, 1);
    assert.deepEqual(await publishOk(A.port, chunk(u2, { n: 'after' })), { seq: 5, delivered: 2 });
    await publishOk(A.port, ev(u1, 'agent_completed', r1, { result: 'done' }));
    assert.equal((await getRun(B.port, r1)).json.state, 'closed');
    assert.equal((await getRun(A.port, uid('none'))).status, 404);

    // Idempotency across nodes.
    const first = await publishOk(A.port, { ...chunk(u2, { k: 1 }), idempotency_key: 'k1' });
    assert.deepEqual(await publishOk(B.port, { ...chunk(u2, { k: 1 }), idempotency_key: 'k1' }), { seq: first.seq, delivered: 0, duplicate: true });

    // Resume on the other node; a direct message; the cap (2 per user) across nodes.
    const [ta, tb] = tabs.get(u2);
    await waitFor(() => eventsOf(ta).length >= 6, 5000, 'u2 caught up');
    const last = eventsOf(ta).at(-1).seq;
    await ta.close();
    assert.deepEqual(await publishOk(B.port, chunk(u2, { n: 'missed' })), { seq: last + 1, delivered: 1 });
    const back = own(await connect(B.port, { user_id: u2, last_seq: String(last - 1), epoch: ta.hello.data.epoch }));
    assert.equal(back.hello.data.recovered, true);
    await back.next((m) => m.seq === last + 1, 3000, 'the missed event replayed');
    assert.deepEqual(eventsOf(back).map((m) => m.seq), [last, last + 1]);
    const third = own(await connect(A.port, { user_id: u2 }));
    const closed = await tb.waitClose(5000);
    assert.equal(closed.code, 4001, JSON.stringify(closed));
    assert.deepEqual(await publishOk(B.port, { ...chunk(u2, { direct: 1 }), connection_id: third.hello.data.connection_id }), { delivered: 1 });
    assert.equal((await third.next((m) => m.data?.direct === 1, 3000, 'direct')).seq, undefined);
    await sleep(100);
    assert.equal(eventsOf(back).filter((m) => m.data?.direct).length, 0);
});
