// The position kept across page loads (`storage`, `storageKey`, `readPosition`,
// `restoredFrom`), the resync a stale position gets, and `sendMessage`: first through the
// fake socket (exact URLs and stored values), then against the real daemon (a reload that
// resumes, the person's message in both tabs of the user).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, readPosition } from '../agentcast.js';
import { WebSocket, daemonFor, publishMany, record, closeAfter, uid, waitFor, fakeClass } from '../test-helpers.mjs';

/** A Web Storage stand-in (getItem/setItem over a Map), with a count of writes. */
function memoryStorage(init = {}) {
    const m = new Map(Object.entries(init));
    return {
        writes: 0,
        getItem: (k) => (m.has(k) ? m.get(k) : null),
        setItem(k, v) {
            this.writes += 1;
            m.set(k, String(v));
        },
        get: (k) => (m.has(k) ? JSON.parse(m.get(k)) : undefined),
    };
}

const nextSocket = (W, n) => waitFor(() => W.made[n - 1], 2000, `socket #${n}`, 1);
const ev = (seq, extra = {}) => ({ type: 'ev', seq, user_id: 'u1', data: {}, ...extra });

test('the position is written after each event and on connected, under agentcast.position:<userId>', async (t) => {
    const W = fakeClass();
    const storage = memoryStorage();
    const c = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, storage }));
    const key = 'agentcast.position:u1';
    let seenInListener;
    c.on('ev', () => (seenInListener = storage.get(key)));
    const s = await nextSocket(W, 1);
    assert.equal(s.url.searchParams.get('last_seq'), null, 'nothing stored: a live start');
    s.connected(4, { epoch: 'E1' });
    assert.deepEqual(storage.get(key), { last_seq: 4, epoch: 'E1', user_id: 'u1' });
    s.msg(ev(5));
    assert.deepEqual(seenInListener, { last_seq: 4, epoch: 'E1', user_id: 'u1' }, 'written after the listeners ran');
    assert.deepEqual(storage.get(key), { last_seq: 5, epoch: 'E1', user_id: 'u1' });
    s.msg(ev(5)); // a duplicate changes nothing and writes nothing
    assert.equal(storage.writes, 2);
    assert.equal(c.restoredFrom, null);
});

test('a new client with the same storage resumes from the stored position (a page reload)', async (t) => {
    const W = fakeClass();
    const storage = memoryStorage({ 'chat:u1': JSON.stringify({ last_seq: 9, epoch: 'EP', user_id: 'u1' }) });
    const c = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, storage, storageKey: 'chat:u1' }));
    const rec = record(c);
    const s = await nextSocket(W, 1);
    assert.equal(s.url.searchParams.get('last_seq'), '9');
    assert.equal(s.url.searchParams.get('epoch'), 'EP');
    assert.deepEqual(c.restoredFrom, { lastSeq: 9, epoch: 'EP', userId: 'u1' });
    s.connected(11, { epoch: 'EP', recovered: true });
    s.msg(ev(10));
    s.msg(ev(11));
    assert.deepEqual(rec.seqs(), [10, 11]);
    assert.deepEqual(rec.states.at(-1), { state: 'resumed', missed: 2, recovered: true, connectionId: 'c1' });
    assert.deepEqual(storage.get('chat:u1'), { last_seq: 11, epoch: 'EP', user_id: 'u1' });
});

test('a stored position the gateway no longer holds surfaces as resync and recovered:false; the new position is stored', async (t) => {
    const W = fakeClass();
    const storage = memoryStorage({ 'agentcast.position:u1': JSON.stringify({ last_seq: 3, epoch: 'OLD', user_id: 'u1' }) });
    const c = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, storage }));
    const rec = record(c);
    const s = await nextSocket(W, 1);
    s.connected(2, { epoch: 'NEW', recovered: false });
    assert.deepEqual(storage.get('agentcast.position:u1'), { last_seq: 3, epoch: 'OLD', user_id: 'u1' }, 'not the old seq under the new epoch');
    s.msg({ type: 'resync', data: { from_seq: 1 } });
    s.msg(ev(1));
    s.msg(ev(2));
    assert.equal(rec.resyncs.length, 1);
    assert.deepEqual({ ...rec.resyncs[0], envelope: undefined }, {
        fromSeq: 1, previousSeq: 3, lost: null, epoch: 'NEW', previousEpoch: 'OLD', envelope: undefined,
    });
    assert.equal(rec.states.find((x) => x.state === 'connected').recovered, false);
    assert.deepEqual(rec.states.at(-1), { state: 'resumed', missed: 2, recovered: false, connectionId: 'c1' });
    assert.deepEqual(storage.get('agentcast.position:u1'), { last_seq: 2, epoch: 'NEW', user_id: 'u1' });
});

test('an explicit lastSeq wins over storage; another user\'s or a malformed position is ignored', async (t) => {
    const W = fakeClass();
    const stored = JSON.stringify({ last_seq: 50, epoch: 'E', user_id: 'u1' });
    const a = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, storage: memoryStorage({ k: stored }), storageKey: 'k', lastSeq: 0, epoch: 'E' }));
    const s1 = await nextSocket(W, 1);
    assert.equal(s1.url.searchParams.get('last_seq'), '0', 'a page that rebuilds from the start asks for 0');
    assert.equal(a.restoredFrom, null);
    const b = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u2', WebSocket: W, storage: memoryStorage({ k: stored }), storageKey: 'k' }));
    const s2 = await nextSocket(W, 2);
    assert.equal(s2.url.searchParams.get('last_seq'), null, 'u1\'s position is not used for u2');
    assert.equal(b.restoredFrom, null);
    for (const bad of ['{', '"x"', '{"last_seq":-1}', '{"last_seq":1.5}', '{"epoch":"E"}', 'null']) {
        assert.equal(readPosition(memoryStorage({ k: bad }), 'k'), null, bad);
    }
    assert.equal(readPosition(undefined), null);
    assert.equal(readPosition({ getItem() { throw new Error('SecurityError'); } }), null);
    assert.deepEqual(readPosition(memoryStorage({ k: '{"last_seq":0}' }), 'k'), { lastSeq: 0, epoch: null, userId: null });
    assert.throws(() => connect({ url: 'ws://h:1/ws', WebSocket: W, storage: {} }), /getItem and setItem/);
});

test('a storage that refuses writes is reported once as a local error; events still flow', async (t) => {
    const W = fakeClass();
    const storage = { getItem: () => null, setItem() { throw new Error('QuotaExceededError'); } };
    const c = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u1', WebSocket: W, storage }));
    const rec = record(c);
    const s = await nextSocket(W, 1);
    s.connected(0);
    s.msg(ev(1));
    s.msg(ev(2));
    assert.deepEqual(rec.seqs(), [1, 2]);
    assert.equal(rec.errors.length, 1);
    assert.equal(rec.errors[0].local, true);
    assert.match(rec.errors[0].data.error, /^storage: QuotaExceededError/);
});

test('sendMessage sends a user_message with the client\'s threadId unless told another', async (t) => {
    const W = fakeClass();
    const c = closeAfter(t, connect({ url: 'ws://h:1/ws', userId: 'u1', threadId: 't1', WebSocket: W }));
    const s = await nextSocket(W, 1);
    assert.equal(c.sendMessage('queued first'), false);
    s.connected(0);
    assert.equal(c.sendMessage('hi', { threadId: 't2' }), true);
    assert.deepEqual(s.sent.map((x) => JSON.parse(x)), [
        { type: 'user_message', text: 'queued first', thread_id: 't1' },
        { type: 'user_message', text: 'hi', thread_id: 't2' },
    ]);
    assert.throws(() => c.sendMessage(''), TypeError);
});

// ---- against the real daemon --------------------------------------------------------

test('real daemon: a reloaded client with the same storage gets exactly what was published meanwhile', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const storage = memoryStorage();
    const first = connect({ url: d.wsUrl, userId: user, WebSocket, storage });
    const r1 = record(first);
    await r1.connected();
    await publishMany(d, user, 3);
    await r1.until((r) => r.events.length === 3, 3000, '3 events');
    first.close();
    await publishMany(d, user, 2, 3); // while "the page" is gone
    const second = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, storage }));
    const r2 = record(second);
    await r2.until((r) => r.states.some((s) => s.state === 'resumed'), 3000, 'resumed');
    assert.deepEqual(second.restoredFrom, { lastSeq: 3, epoch: first.epoch, userId: user });
    assert.deepEqual(r2.seqs(), [4, 5]);
    assert.deepEqual(r2.events.map((e) => e.data.i), [3, 4]);
    assert.deepEqual(r2.resyncs, []);
});

test('real daemon (--demo): sendMessage puts the question in the stream; the other tab gets it, then the run', async (t) => {
    const d = await daemonFor(t, ['--demo']);
    const user = uid();
    const a = closeAfter(t, connect({ url: d.wsUrl, userId: user, threadId: 'ta', WebSocket }));
    const b = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const ra = record(a);
    const rb = record(b);
    await ra.connected();
    await rb.connected();
    const questions = [];
    b.on('user_message', (e) => questions.push(e));
    a.sendMessage('what is 20+22?');
    await rb.until((r) => r.runs.some((run) => run.status === 'completed'), 10000, 'the run completed in tab b');
    assert.equal(questions.length, 1);
    assert.deepEqual(questions[0].data, { text: 'what is 20+22?', thread_id: 'ta', connection_id: a.connectionId });
    assert.equal(rb.events[0].type, 'user_message', 'the question comes before the run');
    assert.equal(b.runs.size, 1, 'a user_message is not a run');
    assert.match(String([...b.runs.values()][0].result), /42/);
    assert.deepEqual(ra.seqs(), rb.seqs());
});
