// Reconnect, resume and resync against the real daemon: every event exactly once and in order
// across dropped sockets, 'resumed' with the missed count, resync when history cannot cover
// the gap (and after a daemon restart: a new epoch), no reconnect after 4001, backoff that
// grows, is capped and resets, and send() queued while reconnecting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../agentcast.js';
import {
    WebSocket, startDaemon, daemonFor, publish, publishMany, record, closeAfter, stats, uid, sleep, range, withTimeout, gate,
} from '../test-helpers.mjs';

const pick = (s, ...keys) => Object.fromEntries(keys.filter((k) => k in s).map((k) => [k, s[k]]));

test('the socket dies: reconnect with last_seq+epoch, replay what was missed, each event exactly once', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const g = gate();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, token: g.token, WebSocket, backoff: { initialMs: 200, jitter: 0 } }));
    const rec = record(c);
    await rec.connected();
    const epoch = c.epoch;
    const firstId = c.connectionId;
    await publishMany(d, user, 3);
    await rec.until((r) => r.events.length >= 3, 3000, '3 live events');

    g.hold(); // the next attempt waits until the events below are published
    c.socket.terminate(); // the TCP connection is gone, no close frame
    await publishMany(d, user, 5, 3); // seq 4..8 while the client is away
    g.release();
    await rec.until((r) => r.stateNames().includes('resumed'), 3000, 'resumed');
    await publishMany(d, user, 2, 8); // live again: seq 9, 10
    await rec.until((r) => r.events.length >= 10, 3000, '10 events');
    await sleep(50);

    assert.deepEqual(rec.seqs(), range(1, 10), 'every event once, in order');
    assert.deepEqual(rec.events.map((e) => e.data.i), range(0, 9));
    assert.deepEqual(rec.states.map((s) => pick(s, 'state', 'attempt', 'delayMs', 'code', 'missed', 'recovered')), [
        { state: 'connecting', attempt: 0 },
        { state: 'connected', attempt: 0, recovered: false },
        { state: 'reconnecting', attempt: 1, delayMs: 200, code: 1006 },
        { state: 'connecting', attempt: 1 },
        { state: 'connected', attempt: 1, recovered: true },
        { state: 'resumed', missed: 5, recovered: true },
    ]);
    assert.notEqual(c.connectionId, firstId, 'a new connection');
    assert.equal(c.epoch, epoch);
    assert.equal(c.lastSeq, 10);
    assert.deepEqual(rec.resyncs, []);
    assert.equal(c.state, 'resumed');
});

test('reconnect with nothing missed: resumed with missed 0', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, backoff: { initialMs: 20, jitter: 0 } }));
    const rec = record(c);
    await rec.connected();
    await publishMany(d, user, 2);
    await rec.until((r) => r.events.length >= 2, 3000, '2 events');
    c.socket.terminate();
    await rec.until((r) => r.stateNames().includes('resumed'), 3000, 'resumed');
    assert.deepEqual(pick(rec.states.at(-1), 'state', 'missed', 'recovered'), { state: 'resumed', missed: 0, recovered: true });
});

test('sockets killed again and again during a stream of 300 events: each event exactly once, in order', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, backoff: { initialMs: 5, maxMs: 40, jitter: 0.5 } }));
    const rec = record(c);
    const iterated = [];
    const it = c.events();
    const consumer = (async () => {
        for await (const e of it) {
            iterated.push(e.seq);
            if (e.seq === 300) break;
        }
    })();
    await rec.connected();
    let kills = 0;
    const killer = setInterval(() => {
        if (c.socket && c.socket.readyState === WebSocket.OPEN) {
            c.socket.terminate();
            kills += 1;
        }
    }, 25);
    try {
        for (let i = 0; i < 30; i++) {
            await publishMany(d, user, 10, i * 10);
            await sleep(8);
        }
        await rec.until((r) => r.events.length >= 300, 5000, '300 events');
    } finally {
        clearInterval(killer);
    }
    await withTimeout(consumer, 3000, 'iterator reaches seq 300');
    assert.ok(kills >= 5, `killed ${kills} sockets`);
    assert.deepEqual(rec.seqs(), range(1, 300));
    assert.deepEqual(iterated, range(1, 300));
    assert.deepEqual(rec.resyncs, []);
    const resumed = rec.states.filter((s) => s.state === 'resumed');
    assert.ok(resumed.length >= 1);
    assert.ok(resumed.every((s) => s.recovered === true));
});

test('resync: history too short for the gap (--history-size 5): resync event, run views reset, the rest replayed', async (t) => {
    const d = await daemonFor(t, ['--history-size', '5']);
    const user = uid();
    const g = gate();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, token: g.token, WebSocket, backoff: { initialMs: 20, jitter: 0 } }));
    const rec = record(c);
    const log = [];
    c.on('resync', (r) => log.push(`resync:${r.fromSeq}:runs=${c.runs.size}`));
    c.on('*', (e) => log.push(`ev:${e.seq}`));
    c.on('state', (s) => log.push(`state:${s.state}`));
    await rec.connected();
    await publish(d, [
        { user_id: user, run_id: 'r1', type: 'agent_started', data: { agent: 'a' } },
        { user_id: user, run_id: 'r1', type: 'agent_thinking', data: { thought: 'x' } },
    ]);
    await rec.until((r) => r.events.length >= 2, 3000, '2 events');
    assert.deepEqual([...c.runs.keys()], ['r1']);

    g.hold();
    c.socket.terminate();
    const body = [
        { user_id: user, run_id: 'r1', type: 'agent_completed', data: { result: 'r' } }, // seq 3
        { user_id: user, run_id: 'r2', type: 'agent_started', data: { agent: 'b' } }, // seq 4
    ];
    for (let i = 0; i < 18; i++) body.push({ user_id: user, run_id: 'r2', type: 'agent_thinking', data: { thought: `${i},` } });
    const seqs = (await publish(d, body)).map((x) => x.seq); // seq 3..22; history keeps 18..22
    assert.deepEqual(seqs, range(3, 22));
    g.release();

    await rec.until((r) => r.stateNames().includes('resumed'), 3000, 'resumed');
    await sleep(50);
    assert.equal(rec.resyncs.length, 1);
    const rs = rec.resyncs[0];
    assert.deepEqual(pick(rs, 'fromSeq', 'previousSeq', 'lost', 'previousEpoch'), { fromSeq: 18, previousSeq: 2, lost: 15, previousEpoch: c.epoch });
    assert.equal(rs.envelope.type, 'resync');
    assert.deepEqual(rec.seqs(), [1, 2, 18, 19, 20, 21, 22], 'the gap is visible, nothing doubled');
    // Order: connected, resync (run views already reset), replayed events, resumed.
    const tail = log.slice(log.lastIndexOf('state:connected'));
    assert.deepEqual(tail, ['state:connected', 'resync:18:runs=0', 'ev:18', 'ev:19', 'ev:20', 'ev:21', 'ev:22', 'state:resumed']);
    assert.deepEqual(pick(rec.states.at(-1), 'state', 'missed', 'recovered'), { state: 'resumed', missed: 5, recovered: false });
    assert.deepEqual(pick(rec.states.at(-2), 'state', 'recovered'), { state: 'connected', recovered: false });
    // r1 is gone (its events are not replayed); r2 is rebuilt from what was replayed only.
    assert.deepEqual([...c.runs.keys()], ['r2']);
    const r2 = c.runs.get('r2');
    assert.equal(r2.status, 'running');
    assert.equal(r2.agent, null, 'its agent_started (seq 4) was not replayed');
    assert.equal(r2.thinking, '13,14,15,16,17,');
    assert.equal(c.lastSeq, 22);

    await publishMany(d, user, 1);
    await rec.until((r) => r.events.length >= 8, 3000, 'live after resync');
    assert.equal(rec.events.at(-1).seq, 23);
});

test('resume on the first connection with lastSeq (+ epoch); a wrong epoch gets resync', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    await publishMany(d, user, 4);

    const a = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, lastSeq: 1 }));
    const ra = record(a);
    await ra.until((r) => r.stateNames().includes('resumed'), 3000, 'resumed');
    assert.deepEqual(ra.seqs(), [2, 3, 4]);
    assert.deepEqual(pick(ra.states.at(-1), 'state', 'missed', 'recovered'), { state: 'resumed', missed: 3, recovered: true });
    const epoch = a.epoch;

    const b = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, lastSeq: 3, epoch }));
    const rb = record(b);
    await rb.until((r) => r.stateNames().includes('resumed'), 3000, 'resumed b');
    assert.deepEqual(rb.seqs(), [4]);

    const e = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, lastSeq: 2, epoch: 'not-this-one' }));
    const re = record(e);
    await re.until((r) => r.stateNames().includes('resumed'), 3000, 'resumed e');
    assert.equal(re.resyncs.length, 1);
    assert.deepEqual(pick(re.resyncs[0], 'fromSeq', 'previousSeq', 'lost', 'previousEpoch', 'epoch'), {
        fromSeq: 1, previousSeq: 2, lost: null, previousEpoch: 'not-this-one', epoch,
    });
    assert.deepEqual(re.seqs(), [1, 2, 3, 4], 'the current epoch from its start, even seqs below the asked-for one');
    assert.deepEqual(pick(re.states.at(-1), 'state', 'missed', 'recovered'), { state: 'resumed', missed: 4, recovered: false });
});

test('a daemon restart (new epoch): resync, and the new stream is accepted from seq 1', async (t) => {
    let d = await startDaemon();
    t.after(() => d.stop());
    const port = d.port;
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, backoff: { initialMs: 50, maxMs: 200, jitter: 0 } }));
    const rec = record(c);
    await rec.connected();
    await publishMany(d, user, 5);
    await rec.until((r) => r.events.length >= 5, 3000, '5 events');
    const oldEpoch = c.epoch;

    await d.stop();
    await rec.until((r) => r.states.some((s) => s.state === 'reconnecting'), 3000, 'reconnecting');
    assert.deepEqual(pick(rec.states.find((s) => s.state === 'reconnecting'), 'code', 'attempt'), { code: 1001, attempt: 1 });
    d = await startDaemon([], { port });
    await rec.until((r) => r.stateNames().includes('resumed'), 5000, 'resumed on the new daemon');
    assert.notEqual(c.epoch, oldEpoch);
    assert.equal(rec.resyncs.length, 1);
    assert.deepEqual(pick(rec.resyncs[0], 'fromSeq', 'previousSeq', 'lost', 'previousEpoch'), {
        fromSeq: 1, previousSeq: 5, lost: null, previousEpoch: oldEpoch,
    });
    assert.equal(c.lastSeq, 0);
    await publishMany(d, user, 2, 100);
    await rec.until((r) => r.events.length >= 7, 3000, '2 events of the new epoch');
    assert.deepEqual(rec.seqs(), [1, 2, 3, 4, 5, 1, 2], 'seq 1 and 2 of the new epoch are not dropped as duplicates');
    assert.deepEqual(rec.events.slice(5).map((e) => e.data.i), [100, 101]);
});

test('evicted (4001) by a fourth connection of the same user: closed for good, no reconnect', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, backoff: { initialMs: 10, jitter: 0 } }));
    const rec = record(c);
    const closing = [];
    c.on('closing', (e) => closing.push(e));
    const it = c.events();
    await rec.connected();

    const others = [];
    t.after(() => others.forEach((w) => w.terminate()));
    for (let i = 0; i < 3; i++) {
        const w = new WebSocket(`${d.wsUrl}?user_id=${encodeURIComponent(user)}`);
        others.push(w);
        await withTimeout(new Promise((res, rej) => { w.once('message', res); w.once('error', rej); }), 3000, 'other connection');
    }
    await rec.until((r) => r.stateNames().includes('closed'), 3000, 'closed');
    const st = rec.states.at(-1);
    assert.equal(st.state, 'closed');
    assert.equal(st.code, 4001);
    assert.ok(st.reason.length > 0, `a reason: ${st.reason}`);
    assert.equal(closing.length, 1);
    assert.equal(closing[0].data.code, 4001);
    assert.deepEqual(await withTimeout(it.next(), 1000, 'iterator ends'), { value: undefined, done: true });
    await sleep(300);
    assert.deepEqual(rec.stateNames(), ['connecting', 'connected', 'closed'], 'no reconnect');
    assert.equal(c.state, 'closed');
    assert.equal(c.socket, null);
    assert.equal((await stats(d)).total_connections, 3);
    assert.throws(() => c.send({ type: 'pong' }), /closed/);
});

test('backoff: delays grow by the factor and are capped while the daemon is down; close() stops it', async (t) => {
    const d = await startDaemon();
    t.after(() => d.stop());
    const user = uid();
    const c = closeAfter(t, connect({
        url: d.wsUrl, userId: user, WebSocket, backoff: { initialMs: 20, maxMs: 160, factor: 2, jitter: 0 },
    }));
    const rec = record(c);
    await rec.connected();
    await d.stop();
    const reconnecting = () => rec.states.filter((s) => s.state === 'reconnecting');
    await rec.until(() => reconnecting().length >= 7, 4000, '7 reconnect attempts');
    const r = reconnecting().slice(0, 7);
    assert.deepEqual(r.map((s) => s.attempt), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(r.map((s) => s.delayMs), [20, 40, 80, 160, 160, 160, 160]);
    assert.equal(r[0].code, 1001, 'the first close is the shutdown');
    assert.ok(r.slice(1).every((s) => s.code === 1006), 'then refused connections');
    c.close();
    const n = rec.states.length;
    await sleep(250);
    assert.equal(rec.states.length, n, 'nothing after close()');
    assert.deepEqual(rec.states.at(-1), { state: 'closed', code: 1000, reason: 'client closed' });
});

test('backoff with jitter: each delay within [base * (1 - jitter), base]', async (t) => {
    const d = await startDaemon();
    t.after(() => d.stop());
    const c = closeAfter(t, connect({
        url: d.wsUrl, userId: uid(), WebSocket, backoff: { initialMs: 16, maxMs: 64, factor: 2, jitter: 0.5 },
    }));
    const rec = record(c);
    await rec.connected();
    await d.stop();
    await rec.until((r) => r.states.filter((s) => s.state === 'reconnecting').length >= 6, 4000, '6 attempts');
    const delays = rec.states.filter((s) => s.state === 'reconnecting').slice(0, 6).map((s) => s.delayMs);
    const bases = [16, 32, 64, 64, 64, 64];
    delays.forEach((ms, i) => assert.ok(ms >= bases[i] / 2 && ms <= bases[i], `attempt ${i + 1}: ${ms} in [${bases[i] / 2}, ${bases[i]}]`));
});

test('backoff resets once a connection has stayed up for resetAfterMs', async (t) => {
    const d = await daemonFor(t);
    const c = closeAfter(t, connect({
        url: d.wsUrl, userId: uid(), WebSocket, backoff: { initialMs: 20, factor: 2, jitter: 0, resetAfterMs: 300 },
    }));
    const rec = record(c);
    await rec.connected(1);
    c.socket.terminate(); // attempt 1
    await rec.connected(2);
    c.socket.terminate(); // up < 300 ms: attempt 2
    await rec.connected(3);
    await sleep(400); // stable: the count resets
    c.socket.terminate(); // attempt 1 again
    await rec.connected(4);
    const r = rec.states.filter((s) => s.state === 'reconnecting').map((s) => [s.attempt, s.delayMs]);
    assert.deepEqual(r, [[1, 20], [2, 40], [1, 20]]);
});

test('send() while reconnecting is queued and delivered, in order, after the reconnect', async (t) => {
    const d = await daemonFor(t);
    const g = gate();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: uid(), token: g.token, WebSocket, backoff: { initialMs: 20, jitter: 0 } }));
    const rec = record(c);
    await rec.connected();
    g.hold();
    c.socket.terminate();
    assert.equal(c.send({ type: 'hello1' }), false, 'queued');
    await rec.until((r) => r.stateNames().filter((x) => x === 'connecting').length >= 2, 3000, 'attempt 1 started');
    assert.equal(c.send({ type: 'hello2' }), false, 'queued');
    g.release();
    await rec.until((r) => r.errors.filter((e) => !e.local).length >= 2, 3000, '2 error answers');
    const answers = rec.errors.filter((e) => !e.local).map((e) => e.data.error);
    assert.match(answers[0], /unknown message type "hello1"/);
    assert.match(answers[1], /unknown message type "hello2"/);
    assert.equal(rec.states.filter((s) => s.state === 'connected').length, 2, 'answered on the second connection');
});

test('maxQueue: send() throws RangeError when the queue is full', async (t) => {
    const d = await daemonFor(t);
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: uid(), WebSocket, maxQueue: 2 }));
    // Not connected yet (the socket opens in a microtask): both are queued.
    assert.equal(c.send({ type: 'a' }), false);
    assert.equal(c.send({ type: 'b' }), false);
    assert.throws(() => c.send({ type: 'c' }), RangeError);
});
