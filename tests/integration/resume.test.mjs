// Resume with last_seq/epoch: replay of retained events in order, then live, with no gap
// and no duplicate; resync when the asked-for events cannot be replayed; idempotency keys.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonFor, connect, closeAfter, publishOk, byType, notPing, sleep, uid } from './helpers.mjs';

const NONE = ['--auth', 'none'];

async function seed(port, user, n) {
    const seqs = [];
    for (let i = 0; i < n; i++) seqs.push((await publishOk(port, { user_id: user, type: 'ev', data: { i } })).seq);
    return seqs;
}

test('last_seq=N with the current epoch replays N+1..newest in order, then goes live', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const first = closeAfter(t, await connect(d.port, { user_id: user }));
    await seed(d.port, user, 5);
    const epoch = first.hello.data.epoch;
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '2', epoch }));
    assert.equal(c.all[0].type, 'connected');
    assert.equal(c.hello.data.recovered, true);
    assert.equal(c.hello.data.last_seq, 5);
    const replayed = [await c.nextEvent(), await c.nextEvent(), await c.nextEvent()];
    assert.deepEqual(replayed.map((m) => [m.type, m.seq, m.data.i]), [['ev', 3, 2], ['ev', 4, 3], ['ev', 5, 4]]);
    await publishOk(d.port, { user_id: user, type: 'live', data: {} });
    const live = await c.nextEvent();
    assert.deepEqual([live.type, live.seq], ['live', 6]);
    assert.equal(c.all.filter((m) => m.seq !== undefined).length, 4, 'no duplicates');
});

test('replayed events keep their original envelope (timestamp, run_id, thread_id, data)', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const live = closeAfter(t, await connect(d.port, { user_id: user }));
    await publishOk(d.port, { user_id: user, type: 'agent_started', run_id: 'r1', thread_id: 't1', data: { agent: 'a' } });
    const original = await live.nextEvent();
    await sleep(20);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '0', epoch: live.hello.data.epoch }));
    const replayed = await c.nextEvent();
    assert.deepEqual(replayed, original);
});

test('last_seq=0 without epoch replays everything retained (current epoch assumed)', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    await seed(d.port, user, 3);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '0' }));
    assert.equal(c.hello.data.recovered, true);
    const got = [await c.nextEvent(), await c.nextEvent(), await c.nextEvent()];
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3]);
});

test('last_seq equal to the newest seq replays nothing and is recovered', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    await seed(d.port, user, 3);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '3' }));
    assert.equal(c.hello.data.recovered, true);
    await sleep(150);
    assert.deepEqual(c.all.filter(notPing).map((m) => m.type), ['connected']);
});

test('last_seq above the newest seq gets resync and recovered:false', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    await seed(d.port, user, 2);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '50' }));
    assert.equal(c.hello.data.recovered, false);
    const second = await c.nextEvent();
    assert.equal(second.type, 'resync', JSON.stringify(c.all));
    assert.equal(typeof second.data.from_seq, 'number');
    assert.equal(second.user_id, user);
    assert.equal(second.seq, undefined);
});

test('a different epoch gets resync and recovered:false, and no replay of the other epoch', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    await seed(d.port, user, 3);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '1', epoch: 'not-the-epoch' }));
    assert.equal(c.hello.data.recovered, false);
    assert.equal((await c.nextEvent()).type, 'resync', JSON.stringify(c.all));
});

test('direct messages are not replayed on resume', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const live = closeAfter(t, await connect(d.port, { user_id: user }));
    await publishOk(d.port, { user_id: user, type: 'one', data: {} });
    await publishOk(d.port, { user_id: user, type: 'dm', connection_id: live.connectionId, data: {} });
    await publishOk(d.port, { user_id: user, type: 'two', data: {} });
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '0' }));
    const got = [await c.nextEvent(), await c.nextEvent()];
    assert.deepEqual(got.map((m) => m.type), ['one', 'two']);
    await sleep(150);
    assert.equal(c.all.filter((m) => m.type === 'dm').length, 0);
});

test('resuming while events are being published gives every seq exactly once, in order', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns-per-user', '20']);
    const user = uid();
    const N = 150;
    let stop = false;
    const publisher = (async () => {
        for (let i = 0; i < N && !stop; i++) await publishOk(d.port, { user_id: user, type: 'tick', data: { i } });
    })();
    t.after(() => {
        stop = true;
    });
    const clients = [];
    for (let k = 0; k < 5; k++) {
        await sleep(15);
        clients.push(closeAfter(t, await connect(d.port, { user_id: user, last_seq: '0' })));
    }
    await publisher;
    for (const [k, c] of clients.entries()) {
        const seqs = [];
        for (let i = 0; i < N; i++) seqs.push((await c.next(byType('tick'), 3000, `tick ${i} on client ${k}`)).seq);
        assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i + 1), `client ${k}`);
        await sleep(50);
        assert.equal(c.all.filter((m) => m.type === 'tick').length, N, `client ${k}: no duplicates`);
    }
});

test('a repeated idempotency_key replies with the first seq, delivered 0, duplicate true and delivers once', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const e = { user_id: user, type: 'agent_started', idempotency_key: 'k-1', data: { agent: 'a' } };
    const r1 = await publishOk(d.port, e);
    assert.deepEqual(r1, { seq: 1, delivered: 1 });
    const r2 = await publishOk(d.port, e);
    assert.deepEqual(r2, { seq: 1, delivered: 0, duplicate: true });
    const r3 = await publishOk(d.port, { user_id: user, type: 'next', data: {} });
    assert.equal(r3.seq, 2);
    await c.nextEvent();
    await c.nextEvent();
    assert.deepEqual(c.all.filter(notPing).map((m) => m.type), ['connected', 'agent_started', 'next']);
});

test('after --history-ttl, a resume asking for expired events gets resync, never a silent gap', async (t) => {
    const d = await daemonFor(t, [...NONE, '--history-ttl', '0.3', '--cleanup-interval', '0.1']);
    const user = uid();
    const first = await connect(d.port, { user_id: user });
    const epoch = first.hello.data.epoch;
    await first.close();
    await seed(d.port, user, 3);
    await sleep(1000);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '0', epoch }));
    assert.equal(c.hello.data.recovered, false, JSON.stringify(c.hello));
    const m = await c.nextEvent();
    assert.equal(m.type, 'resync', JSON.stringify(c.all));
    assert.equal(typeof m.data.from_seq, 'number');
});

test('after --history-ttl, a seq is never reused within the same epoch', async (t) => {
    const d = await daemonFor(t, [...NONE, '--history-ttl', '0.3', '--cleanup-interval', '0.1']);
    const user = uid();
    const first = await connect(d.port, { user_id: user });
    const epoch1 = first.hello.data.epoch;
    await first.close();
    const seqs = await seed(d.port, user, 3);
    assert.deepEqual(seqs, [1, 2, 3]);
    await sleep(1000);
    const next = await publishOk(d.port, { user_id: user, type: 'ev', data: {} });
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const epoch2 = c.hello.data.epoch;
    if (next.seq <= 3) {
        assert.notEqual(epoch2, epoch1, `seq ${next.seq} reused after expiry, so the epoch must change`);
    } else {
        assert.equal(next.seq, 4);
    }
    assert.equal(c.hello.data.last_seq, next.seq);
});
