// Fan-out of published events to a user's connections: envelopes, order, seq, isolation
// between users, arrays, and direct (connection_id) messages.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    daemonFor,
    connect,
    closeAfter,
    publish,
    publishOk,
    settleUnexpected,
    assertJsonError,
    byType,
    notPing,
    uid,
    TS_RE,
    CRITICAL,
} from './helpers.mjs';

const NONE = ['--auth', 'none'];

/** Asserts an event envelope: exact keys and values, timestamp format. */
function assertEnvelope(got, want, ctx) {
    assert.match(String(got.timestamp), TS_RE, `timestamp format (${ctx})`);
    const { timestamp, ...rest } = got;
    assert.deepEqual(rest, want, ctx);
}

test('every event type published for a user reaches all three of their connections in order, and none reaches another user', async (t) => {
    const d = await daemonFor(t, NONE);
    const alice = uid('alice');
    const bob = uid('bob');
    const a = [];
    const b = [];
    for (let i = 0; i < 3; i++) a.push(closeAfter(t, await connect(d.port, { user_id: alice })));
    for (let i = 0; i < 3; i++) b.push(closeAfter(t, await connect(d.port, { user_id: bob })));

    const events = [
        { type: 'agent_started', run_id: 'r1', thread_id: 't1', data: CRITICAL.agent_started },
        { type: 'agent_thinking', run_id: 'r1', thread_id: 't1', data: CRITICAL.agent_thinking },
        { type: 'tool_executing', run_id: 'r1', thread_id: 't1', data: CRITICAL.tool_executing },
        { type: 'tool_completed', run_id: 'r1', thread_id: 't1', data: CRITICAL.tool_completed },
        { type: 'ui.progress-update_2', run_id: 'r1', data: { pct: 50, note: 'half' } },
        { type: 'agent_completed', run_id: 'r1', thread_id: 't1', data: CRITICAL.agent_completed },
        { type: 'agent_error', data: { error: 'quota exceeded', detail: { retry: false } } },
    ];
    const replies = [];
    for (const e of events) {
        const r = await publish(d.port, { user_id: alice, ...e });
        assert.equal(r.status, 200, `publish ${e.type}: ${r.text}`);
        replies.push(r.json);
    }
    const base = a[0].hello.data.last_seq;
    replies.forEach((r, i) => {
        assert.deepEqual(r, { seq: base + i + 1, delivered: 3 }, `reply to ${events[i].type}`);
    });

    for (const [ci, c] of a.entries()) {
        assert.equal(c.hello.data.last_seq, base, 'all connections start from the same newest seq');
        for (const [i, e] of events.entries()) {
            const got = await c.next(notPing, 2000, `event ${i} (${e.type}) on connection ${ci}`);
            const want = { type: e.type, seq: base + i + 1, user_id: alice };
            if (e.run_id !== undefined) want.run_id = e.run_id;
            if (e.thread_id !== undefined) want.thread_id = e.thread_id;
            want.data = e.data;
            assertEnvelope(got, want, `connection ${ci} event ${i}`);
        }
    }
    for (const [ci, c] of b.entries()) {
        const extra = await settleUnexpected(c, 250);
        assert.deepEqual(extra, [], `bob's connection ${ci} must receive nothing but connected/ping`);
    }
});

test('an event published for one user is not delivered to another user, whose delivered count is separate', async (t) => {
    const d = await daemonFor(t, NONE);
    const alice = uid('alice');
    const bob = uid('bob');
    const ca = closeAfter(t, await connect(d.port, { user_id: alice }));
    const cb = closeAfter(t, await connect(d.port, { user_id: bob }));
    const r = await publishOk(d.port, { user_id: bob, type: 'agent_started', data: { agent: 'x' } });
    assert.equal(r.delivered, 1);
    const got = await cb.nextEvent();
    assert.equal(got.type, 'agent_started');
    assert.equal(got.user_id, bob);
    assert.deepEqual(await settleUnexpected(ca, 200), []);
});

test('connected is the first message and carries connection_id, last_seq, epoch, recovered:false', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user, thread_id: 'th-9' }));
    const first = c.all[0];
    assert.equal(first.type, 'connected');
    assert.equal(first.user_id, user);
    assert.equal(first.thread_id, 'th-9');
    assert.match(first.timestamp, TS_RE);
    assert.equal(first.seq, undefined, 'connected carries no seq');
    assert.equal(typeof first.data, 'object');
    assert.equal(typeof first.data.connection_id, 'string');
    assert.ok(first.data.connection_id.length > 0, 'connection_id not empty');
    assert.equal(first.data.last_seq, 0, 'a new user has last_seq 0');
    assert.equal(typeof first.data.epoch, 'string');
    assert.ok(first.data.epoch.length > 0, 'epoch not empty');
    assert.equal(first.data.recovered, false);
});

test('connected omits thread_id when the connection has none', async (t) => {
    const d = await daemonFor(t, NONE);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    assert.equal(c.all[0].type, 'connected');
    assert.ok(!('thread_id' in c.all[0]), JSON.stringify(c.all[0]));
});

test('connected reports the newest seq of the user as last_seq', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const first = closeAfter(t, await connect(d.port, { user_id: user }));
    await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    await first.nextEvent();
    await first.nextEvent();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    assert.equal(c.hello.data.last_seq, 2);
    assert.equal(c.hello.data.recovered, false);
    assert.equal(c.hello.data.epoch, first.hello.data.epoch, 'same epoch for the same stream');
    assert.notEqual(c.hello.data.connection_id, first.hello.data.connection_id, 'connection ids are unique');
});

test('a connection without last_seq starts live: nothing earlier is replayed', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    await publishOk(d.port, { user_id: user, type: 'note', data: { n: 1 } });
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    assert.equal(c.hello.data.last_seq, 1);
    const r = await publishOk(d.port, { user_id: user, type: 'note', data: { n: 2 } });
    assert.equal(r.seq, 2);
    const got = await c.nextEvent();
    assert.equal(got.seq, 2, `the first event after connected is the live one: ${JSON.stringify(c.all)}`);
});

test('publishing for a user with no connection returns a seq and delivered 0', async (t) => {
    const d = await daemonFor(t, NONE);
    const r = await publish(d.port, { user_id: uid(), type: 'agent_started', data: { agent: 'a' } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { seq: 1, delivered: 0 });
});

test('data defaults to an empty object when omitted from a publish', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    await publishOk(d.port, { user_id: user, type: 'heartbeat.custom' });
    const got = await c.nextEvent();
    assert.equal(got.type, 'heartbeat.custom');
    assert.deepEqual(got.data, {});
});

test('array publish returns an array of {seq, delivered} with consecutive seqs, delivered in order', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    await publishOk(d.port, { user_id: user, type: 'warmup', data: {} });
    const items = [
        { user_id: user, type: 'agent_started', data: { agent: 'a' } },
        { user_id: user, type: 'agent_thinking', data: { thought: 'hmm' } },
        { user_id: user, type: 'agent_completed', data: { result: 'done' } },
    ];
    const r = await publish(d.port, items);
    assert.equal(r.status, 200, r.text);
    assert.ok(Array.isArray(r.json), `reply is an array: ${r.text}`);
    assert.deepEqual(r.json, [
        { seq: 2, delivered: 2 },
        { seq: 3, delivered: 2 },
        { seq: 4, delivered: 2 },
    ]);
    for (const conn of [c, c2]) {
        assert.equal((await conn.nextEvent()).type, 'warmup');
        for (const [i, it] of items.entries()) {
            const got = await conn.nextEvent();
            assert.equal(got.type, it.type);
            assert.equal(got.seq, 2 + i);
            assert.deepEqual(got.data, it.data);
        }
    }
});

test('array publish may mix users; each item gets that user\'s own seq', async (t) => {
    const d = await daemonFor(t, NONE);
    const u1 = uid();
    const u2 = uid();
    const c1 = closeAfter(t, await connect(d.port, { user_id: u1 }));
    const c2 = closeAfter(t, await connect(d.port, { user_id: u2 }));
    const r = await publish(d.port, [
        { user_id: u1, type: 'a1', data: {} },
        { user_id: u2, type: 'b1', data: {} },
        { user_id: u1, type: 'a2', data: {} },
    ]);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [
        { seq: 1, delivered: 1 },
        { seq: 1, delivered: 1 },
        { seq: 2, delivered: 1 },
    ]);
    assert.deepEqual([(await c1.nextEvent()).type, (await c1.nextEvent()).type], ['a1', 'a2']);
    assert.equal((await c2.nextEvent()).type, 'b1');
    assert.deepEqual(await settleUnexpected(c2, 150).then((x) => x.length), 1);
});

test('an array with one bad item is rejected whole with 400 and its index; nothing is delivered and no seq is used', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const first = await publishOk(d.port, { user_id: user, type: 'before', data: {} });
    assert.equal(first.seq, 1);
    assert.equal((await c.nextEvent()).type, 'before');

    const r = await publish(d.port, [
        { user_id: user, type: 'agent_started', data: { agent: 'a' } },
        { user_id: user, data: { x: 1 } },
        { user_id: user, type: 'agent_completed', data: { result: 'r' } },
    ]);
    assertJsonError(assert, r, 400, 'type: required');
    assert.equal(r.json.index, 1, `index of the bad item: ${r.text}`);

    assert.deepEqual(await settleUnexpected(c, 250).then((m) => m.filter((x) => x.type !== 'before')), [],
        'nothing of the rejected array is delivered');
    const after = await publishOk(d.port, { user_id: user, type: 'after', data: {} });
    assert.equal(after.seq, 2, 'the rejected array consumed no seq');
    const got = await c.nextEvent();
    assert.equal(got.type, 'after');
    assert.equal(got.seq, 2);
});

test('an array whose last item has a bad data field is rejected with that index', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const r = await publish(d.port, [
        { user_id: user, type: 'note', data: {} },
        { user_id: user, type: 'tool_executing', data: { tool: 'x' } },
    ]);
    assertJsonError(assert, r, 400, 'data.tool_call_id: required for tool_executing');
    assert.equal(r.json.index, 1);
    const next = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(next.seq, 1, 'no seq consumed by the rejected array');
});

test('an empty array publish is 400', async (t) => {
    const d = await daemonFor(t, NONE);
    const r = await publish(d.port, []);
    assertJsonError(assert, r, 400);
});

test('a direct message (connection_id) reaches only that connection, without seq', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c1 = closeAfter(t, await connect(d.port, { user_id: user }));
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    const r = await publish(d.port, {
        user_id: user,
        type: 'direct.note',
        thread_id: 't5',
        connection_id: c1.connectionId,
        data: { hello: 'only you' },
    });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { delivered: 1 });
    const got = await c1.nextEvent();
    assert.match(got.timestamp, TS_RE);
    const { timestamp, ...rest } = got;
    assert.deepEqual(rest, { type: 'direct.note', user_id: user, thread_id: 't5', data: { hello: 'only you' } });
    assert.deepEqual(await settleUnexpected(c2, 250), [], 'the other connection of the same user gets nothing');
});

test('a direct message repeated with its idempotency key is a duplicate: delivered once, answered {delivered:0,duplicate:true}, also after its connection closed', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c1 = await connect(d.port, { user_id: user });
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    const dm = (key, n) => ({ user_id: user, type: 'dm', connection_id: c1.connectionId, data: { n }, idempotency_key: key });
    assert.deepEqual(await publishOk(d.port, dm('dm-1', 1)), { delivered: 1 });
    // A retry after a lost answer (other data even): not delivered again.
    assert.deepEqual(await publishOk(d.port, dm('dm-1', 2)), { delivered: 0, duplicate: true });
    // The same new key twice in one array: the second is the first's duplicate.
    assert.deepEqual(await publishOk(d.port, [dm('dm-2', 3), dm('dm-2', 4)]), [{ delivered: 1 }, { delivered: 0, duplicate: true }]);
    // A seq'd event after them still gets seq 1: no key took one.
    assert.equal((await publishOk(d.port, { user_id: user, type: 'after', data: {} })).seq, 1);
    await c1.nextEvent();
    await c2.nextEvent();
    // Everything each tab received, once the last event has had time to arrive.
    const got = await settleUnexpected(c1, 150);
    assert.deepEqual(got.map((m) => [m.type, m.data.n, m.seq]), [['dm', 1, undefined], ['dm', 3, undefined], ['after', undefined, 1]]);
    assert.deepEqual((await settleUnexpected(c2, 0)).map((m) => [m.type, m.seq]), [['after', 1]], 'the other tab got only the seq\'d event');
    await c1.close();
    let r;
    for (let i = 0; i < 20; i++) {
        r = await publish(d.port, dm('dm-3', 5));
        if (r.status !== 200) break;
        await new Promise((res) => setTimeout(res, 25));
    }
    assertJsonError(assert, r, 404, 'connection_id: not open for this user');
    // The retry of a delivered one is still its duplicate once the connection is gone.
    assert.deepEqual(await publishOk(d.port, dm('dm-1', 6)), { delivered: 0, duplicate: true });
});

test('a direct message does not consume a seq', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    assert.equal((await publishOk(d.port, { user_id: user, type: 'one', data: {} })).seq, 1);
    await publishOk(d.port, { user_id: user, type: 'dm', connection_id: c.connectionId, data: {} });
    assert.equal((await publishOk(d.port, { user_id: user, type: 'two', data: {} })).seq, 2);
    const got = [await c.nextEvent(), await c.nextEvent(), await c.nextEvent()];
    assert.deepEqual(got.map((m) => [m.type, m.seq]), [['one', 1], ['dm', undefined], ['two', 2]]);
});

test('a direct message to a connection of another user is 404', async (t) => {
    const d = await daemonFor(t, NONE);
    const alice = uid('alice');
    const bob = uid('bob');
    const ca = closeAfter(t, await connect(d.port, { user_id: alice }));
    const cb = closeAfter(t, await connect(d.port, { user_id: bob }));
    const r = await publish(d.port, { user_id: alice, type: 'dm', connection_id: cb.connectionId, data: {} });
    assertJsonError(assert, r, 404, 'connection_id: not open for this user');
    assert.deepEqual(await settleUnexpected(cb, 200), [], 'bob receives nothing');
    assert.deepEqual(await settleUnexpected(ca, 0), [], 'alice receives nothing');
});

test('a direct message to a closed connection is 404', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = await connect(d.port, { user_id: user });
    const keep = closeAfter(t, await connect(d.port, { user_id: user }));
    const id = c.connectionId;
    await c.close();
    // The server has seen the close once our close handshake completed; allow it a moment.
    let r;
    for (let i = 0; i < 20; i++) {
        r = await publish(d.port, { user_id: user, type: 'dm', connection_id: id, data: {} });
        if (r.status !== 200) break;
        await new Promise((res) => setTimeout(res, 25));
    }
    assertJsonError(assert, r, 404, 'connection_id: not open for this user');
    assert.deepEqual(await settleUnexpected(keep, 150), []);
});

test('a direct message to an unknown connection id is 404', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    closeAfter(t, await connect(d.port, { user_id: user }));
    const r = await publish(d.port, { user_id: user, type: 'dm', connection_id: 'c-does-not-exist', data: {} });
    assertJsonError(assert, r, 404, 'connection_id: not open for this user');
});

test('the connection thread_id labels the connection but does not filter events', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user, thread_id: 'thread-a' }));
    await publishOk(d.port, { user_id: user, type: 'note', thread_id: 'thread-b', data: {} });
    await publishOk(d.port, { user_id: user, type: 'note2', data: {} });
    const e1 = await c.nextEvent();
    const e2 = await c.nextEvent();
    assert.equal(e1.thread_id, 'thread-b', 'the event keeps its own thread_id');
    assert.equal(e2.type, 'note2');
    assert.ok(!('thread_id' in e2), `an event published without thread_id has none: ${JSON.stringify(e2)}`);
});

test('large event data (200 KiB) arrives intact', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const big = 'x'.repeat(200 * 1024);
    await publishOk(d.port, { user_id: user, type: 'agent_thinking', data: { thought: big } });
    const got = await c.nextEvent(3000);
    assert.equal(got.data.thought.length, big.length);
    assert.equal(got.data.thought, big);
});

test('unicode in data survives the round trip', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const data = { thought: 'héllo wörld — 你好 🎉 "quoted" \\ back\nslash', n: 1.5, ok: true, nil: null, arr: [1, 'a'] };
    await publishOk(d.port, { user_id: user, type: 'agent_thinking', data });
    assert.deepEqual((await c.nextEvent()).data, data);
});

test('many events in quick succession arrive in seq order on every connection', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const cs = [];
    for (let i = 0; i < 3; i++) cs.push(closeAfter(t, await connect(d.port, { user_id: user })));
    const N = 200;
    await Promise.all(
        Array.from({ length: 4 }, (_, k) =>
            (async () => {
                for (let i = 0; i < N / 4; i++) {
                    await publishOk(d.port, { user_id: user, type: 'tick', data: { k, i } });
                }
            })(),
        ),
    );
    for (const c of cs) {
        const seqs = [];
        for (let i = 0; i < N; i++) seqs.push((await c.next(byType('tick'), 3000, `tick ${i}`)).seq);
        assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i + 1));
    }
});

test('an array of 500 events gets 500 consecutive seqs, delivered in order', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const items = Array.from({ length: 500 }, (_, i) => ({ user_id: user, type: 'bulk', data: { i } }));
    const r = await publish(d.port, items);
    assert.equal(r.status, 200, r.text.slice(0, 200));
    assert.deepEqual(r.json.map((x) => x.seq), Array.from({ length: 500 }, (_, i) => i + 1));
    for (let i = 0; i < 500; i++) {
        const m = await c.next(byType('bulk'), 3000, `bulk ${i}`);
        assert.deepEqual([m.seq, m.data.i], [i + 1, i]);
    }
});

test('ids with quotes, backslashes and unicode are escaped correctly in every envelope', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = `${uid()}"},"type":"evil\\x\u00e9`;
    const thread = 'th"read\\';
    const c = closeAfter(t, await connect(d.port, { user_id: user, thread_id: thread }));
    assert.equal(c.hello.type, 'connected');
    assert.equal(c.hello.user_id, user);
    assert.equal(c.hello.thread_id, thread);
    // agent_started opens the run, so this is valid under the run lifecycle rules too.
    await publishOk(d.port, { user_id: user, type: 'agent_started', run_id: 'r"1\\', thread_id: 't"/\u00e9', data: { agent: 'a' } });
    const m = await c.nextEvent();
    assert.deepEqual([m.type, m.user_id, m.run_id, m.thread_id], ['agent_started', user, 'r"1\\', 't"/\u00e9']);
});

test('a NUL character (\\u0000) inside a data string survives the round trip', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const r = await publish(d.port, { user_id: user, type: 'agent_thinking', data: { thought: 'a\u0000b' } });
    assert.equal(r.status, 200, r.text);
    assert.equal((await c.nextEvent()).data.thought, 'a\u0000b');
});

test('numbers in data survive the round trip', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const data = { i: 123456789012, neg: -42, f: 0.1, g: 1.5e300, small: 5e-324, z: 0, arr: [1.25, -3] };
    await publishOk(d.port, { user_id: user, type: 'nums', data });
    assert.deepEqual((await c.nextEvent()).data, data);
});

test('50 users with 3 connections each receive only their own events', async (t) => {
    const d = await daemonFor(t, NONE);
    const users = Array.from({ length: 50 }, () => uid('many'));
    const conns = new Map();
    for (const u of users) {
        const cs = [];
        for (let i = 0; i < 3; i++) cs.push(closeAfter(t, await connect(d.port, { user_id: u })));
        conns.set(u, cs);
    }
    const replies = await Promise.all(users.map((u) => publishOk(d.port, { user_id: u, type: 'mine', data: { u } })));
    for (const r of replies) assert.deepEqual(r, { seq: 1, delivered: 3 });
    for (const u of users) {
        for (const c of conns.get(u)) {
            const m = await c.next(byType('mine'), 3000, `event for ${u}`);
            assert.deepEqual([m.user_id, m.data.u, m.seq], [u, u, 1]);
        }
    }
    await new Promise((r) => setTimeout(r, 150));
    for (const u of users) for (const c of conns.get(u)) assert.equal(c.all.filter((m) => m.type === 'mine').length, 1);
});
