// The client's defences against what the real daemon never does (duplicates, seq gaps, a close
// frame lost after `closing`), plus URL building, token callbacks and timeouts, driven through
// an injected fake WebSocket. Everything else is tested against the real daemon.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../agentcast.js';
import { record, sleep, waitFor, fakeClass, FakeSocket } from '../test-helpers.mjs';

const ev = (seq, extra = {}) => ({ type: 'ev', seq, user_id: 'u1', timestamp: '2026-01-01T00:00:00.000Z', data: {}, ...extra });
const nextSocket = (W, n) => waitFor(() => W.made[n - 1], 2000, `socket #${n}`, 1);

test('URL: user_id, thread_id, token; last_seq and epoch only when resuming; existing query kept', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws?x=1', userId: 'u 1', threadId: 't/1', token: 'tok', WebSocket: W, backoff: { initialMs: 1, jitter: 0 } });
    t.after(() => c.close());
    const s1 = await nextSocket(W, 1);
    assert.deepEqual(Object.fromEntries(s1.url.searchParams), { x: '1', token: 'tok', user_id: 'u 1', thread_id: 't/1' });
    s1.connected(7, { epoch: 'EP' });
    s1.drop(1006);
    const s2 = await nextSocket(W, 2);
    assert.deepEqual(Object.fromEntries(s2.url.searchParams), {
        x: '1', token: 'tok', user_id: 'u 1', thread_id: 't/1', last_seq: '7', epoch: 'EP',
    });
});

test('a token function is called before every attempt; its failure is an error and a retry', async (t) => {
    const W = fakeClass();
    let calls = 0;
    const c = connect({
        url: 'ws://h:1/ws', WebSocket: W, backoff: { initialMs: 1, jitter: 0 },
        token: async () => {
            calls += 1;
            if (calls === 2) throw new Error('refresh failed');
            return `t${calls}`;
        },
    });
    t.after(() => c.close());
    const rec = record(c);
    const s1 = await nextSocket(W, 1);
    assert.equal(s1.url.searchParams.get('token'), 't1');
    s1.connected(0);
    s1.drop(1006);
    const s2 = await nextSocket(W, 2);
    assert.equal(s2.url.searchParams.get('token'), 't3');
    assert.equal(calls, 3);
    assert.ok(rec.errors.some((e) => e.local && /token: refresh failed/.test(e.data.error)));
});

test('duplicates and old seqs are dropped; a gap is reported as an error, not hidden', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W });
    t.after(() => c.close());
    const rec = record(c);
    const s = await nextSocket(W, 1);
    s.connected(10);
    for (const seq of [11, 12, 12, 11, 5, 13]) s.msg(ev(seq));
    assert.deepEqual(rec.seqs(), [11, 12, 13]);
    assert.deepEqual(rec.errors, []);
    s.msg(ev(15));
    assert.deepEqual(rec.seqs(), [11, 12, 13, 15]);
    assert.equal(rec.errors.length, 1);
    assert.equal(rec.errors[0].local, true);
    assert.match(rec.errors[0].data.error, /seq gap: expected 14, got 15/);
});

test('a replayed duplicate after resume is dropped and not counted as missed', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, backoff: { initialMs: 1, jitter: 0 } });
    t.after(() => c.close());
    const rec = record(c);
    const s1 = await nextSocket(W, 1);
    s1.connected(0);
    s1.msg(ev(1));
    s1.msg(ev(2));
    s1.drop(1006);
    const s2 = await nextSocket(W, 2);
    assert.equal(s2.url.searchParams.get('last_seq'), '2');
    s2.connected(4, { recovered: true });
    for (const seq of [2, 3, 4]) s2.msg(ev(seq));
    assert.deepEqual(rec.seqs(), [1, 2, 3, 4]);
    assert.deepEqual(rec.states.at(-1), { state: 'resumed', missed: 2, recovered: true, connectionId: 'c1' });
});

test('closing {4001} then a lost close frame (1006): still closed for good with 4001 and its reason', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, backoff: { initialMs: 1, jitter: 0 } });
    t.after(() => c.close());
    const rec = record(c);
    const s = await nextSocket(W, 1);
    s.connected(0);
    s.msg({ type: 'closing', data: { code: 4001, reason: 'evicted: too many connections' } });
    s.drop(1006, '');
    assert.deepEqual(rec.states.at(-1), { state: 'closed', code: 4001, reason: 'evicted: too many connections' });
    await sleep(30);
    assert.equal(W.made.length, 1, 'no reconnect');
});

test('closing {1001} then 1006: reconnects, reporting 1001', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, backoff: { initialMs: 1, jitter: 0 } });
    t.after(() => c.close());
    const rec = record(c);
    const s = await nextSocket(W, 1);
    s.connected(0);
    s.msg({ type: 'closing', data: { code: 1001, reason: 'server shutting down' } });
    s.drop(1006, '');
    await nextSocket(W, 2);
    const r = rec.states.find((x) => x.state === 'reconnecting');
    assert.equal(r.code, 1001);
    assert.equal(r.reason, 'server shutting down');
});

test('connectTimeoutMs: an attempt without connected is abandoned and retried', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, connectTimeoutMs: 30, backoff: { initialMs: 1, jitter: 0 } });
    t.after(() => c.close());
    const rec = record(c);
    const s1 = await nextSocket(W, 1);
    s1.open(); // TCP up, but no `connected`
    await nextSocket(W, 2);
    assert.equal(s1.readyState, 3, 'the stalled socket was closed');
    assert.ok(rec.errors.some((e) => /connect timeout/.test(e.data.error)));
    assert.equal(rec.states.find((x) => x.state === 'reconnecting').reason, 'connect timeout');
});

test('idleTimeoutMs: a silent connection is abandoned and resumed', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, idleTimeoutMs: 40, backoff: { initialMs: 1, jitter: 0 } });
    t.after(() => c.close());
    const s1 = await nextSocket(W, 1);
    s1.connected(3);
    for (let i = 0; i < 4; i++) {
        await sleep(20);
        s1.msg({ type: 'ping' }); // keeps it alive
    }
    assert.equal(W.made.length, 1);
    assert.equal(s1.sent.filter((x) => x === '{"type":"pong"}').length, 4);
    const s2 = await nextSocket(W, 2); // then silence
    assert.equal(s2.url.searchParams.get('last_seq'), '3');
});

test('a listener that throws does not disturb the client or the other listeners', async (t) => {
    const W = fakeClass();
    const c = connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W });
    t.after(() => c.close());
    const rec = record(c);
    const uncaught = [];
    const onUncaught = (err) => uncaught.push(err);
    process.prependListener('uncaughtException', onUncaught);
    const saved = process.listeners('uncaughtException').filter((l) => l !== onUncaught);
    saved.forEach((l) => process.off('uncaughtException', l));
    try {
        c.on('ev', () => {
            throw new Error('boom');
        });
        const s = await nextSocket(W, 1);
        s.connected(0);
        s.msg(ev(1));
        s.msg(ev(2));
        await sleep(20);
    } finally {
        process.off('uncaughtException', onUncaught);
        saved.forEach((l) => process.on('uncaughtException', l));
    }
    assert.deepEqual(rec.seqs(), [1, 2]);
    assert.equal(c.lastSeq, 2);
    assert.deepEqual(uncaught.map((e) => e.message), ['boom', 'boom'], 'reported asynchronously');
});

test('connect() validates its options', () => {
    assert.throws(() => connect({}), /url is required/);
    assert.throws(() => connect({ url: 'not a url', WebSocket: FakeSocket }), TypeError);
    assert.throws(() => connect({ url: 'ws://h/ws', WebSocket: FakeSocket, lastSeq: -1 }), /lastSeq/);
    const saved = globalThis.WebSocket;
    try {
        globalThis.WebSocket = undefined;
        assert.throws(() => connect({ url: 'ws://h/ws' }), /no WebSocket/);
        globalThis.WebSocket = FakeSocket;
        const c = connect({ url: 'ws://h/ws', userId: 'u' }); // the global is the default
        c.close();
        assert.equal(c.state, 'closed');
    } finally {
        globalThis.WebSocket = saved;
    }
});
