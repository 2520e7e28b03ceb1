// Delivery through the client against the real daemon: typed handlers, '*' order, the async
// iterator, direct messages, app-level ping/pong, send() and the gateway's error answer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../agentcast.js';
import { WebSocket, daemonFor, publish, publishMany, record, closeAfter, uid, withTimeout, sleep, range } from '../test-helpers.mjs';

test('connect: state connecting then connected; userId, epoch, connectionId, lastSeq from connected', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    await publishMany(d, user, 3); // seq 1..3 exist before the client comes
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, threadId: 'th-1', WebSocket }));
    const rec = record(c); // added after connect(): the first socket opens in a microtask
    assert.equal(c.state, 'connecting');
    await rec.connected();
    assert.deepEqual(rec.stateNames(), ['connecting', 'connected']);
    assert.equal(rec.states[0].attempt, 0);
    assert.equal(rec.states[1].recovered, false);
    assert.match(rec.states[1].connectionId, /^c/);
    assert.equal(c.state, 'connected');
    assert.equal(c.userId, user);
    assert.equal(c.connectionId, rec.states[1].connectionId);
    assert.equal(typeof c.epoch, 'string');
    assert.ok(c.epoch.length > 0);
    assert.equal(c.lastSeq, 3, 'a live start resumes later from the newest seq at connect time');
    assert.equal(c.socket.readyState, WebSocket.OPEN);
    assert.deepEqual(rec.errors, []);
});

test('typed handlers get only their type; off() removes; "*" gets every event in seq order', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    /** @type {Record<string, number[]>} */
    const byType = {};
    const star = [];
    const order = [];
    for (const type of ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed', 'custom.thing']) {
        c.on(type, (e) => {
            assert.equal(e.type, type);
            (byType[type] ??= []).push(e.seq);
            order.push(`${type}:${e.seq}`);
        });
    }
    c.on('*', (e) => {
        star.push(e.seq);
        order.push(`*:${e.seq}`);
    });
    const removed = [];
    const offFn = (e) => removed.push(e.seq);
    c.on('agent_thinking', offFn);
    await rec.connected();

    const run = { user_id: user, run_id: 'r1', thread_id: 't1' };
    await publish(d, [
        { ...run, type: 'agent_started', data: { agent: 'planner' } },
        { ...run, type: 'agent_thinking', data: { thought: 'a' } },
    ]);
    await rec.until((r) => r.events.length >= 2, 3000, '2 events');
    c.off('agent_thinking', offFn);
    const unsubscribe = c.on('agent_thinking', offFn);
    unsubscribe(); // the returned function removes too
    await publish(d, [
        { ...run, type: 'agent_thinking', data: { thought: 'b' } },
        { ...run, type: 'tool_executing', data: { tool: 'search', tool_call_id: 'c1' } },
        { ...run, type: 'custom.thing', data: { x: 1 } },
        { ...run, type: 'tool_completed', data: { tool: 'search', tool_call_id: 'c1', result: 'ok' } },
        { ...run, type: 'agent_completed', data: { result: 'done' } },
    ]);
    await rec.until((r) => r.events.length >= 7, 3000, '7 events');
    assert.deepEqual(star, range(1, 7));
    assert.deepEqual(byType, {
        agent_started: [1],
        agent_thinking: [2, 3],
        tool_executing: [4],
        'custom.thing': [5],
        tool_completed: [6],
        agent_completed: [7],
    });
    assert.deepEqual(removed, [2], 'off() stopped the listener after seq 2');
    // For each event the type's listeners run before '*'.
    assert.deepEqual(order.slice(0, 4), ['agent_started:1', '*:1', 'agent_thinking:2', '*:2']);
    assert.equal(c.lastSeq, 7);
    assert.deepEqual(rec.errors, []);
});

test('a published type named like a client listener ("state", "run") reaches "*" only', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    await rec.connected();
    await publish(d, [
        { user_id: user, type: 'state', data: { x: 1 } },
        { user_id: user, type: 'run', data: { x: 2 } },
    ]);
    await rec.until((r) => r.events.length >= 2, 3000, '2 events');
    assert.deepEqual(rec.events.map((e) => e.type), ['state', 'run']);
    assert.deepEqual(rec.stateNames(), ['connecting', 'connected'], 'no fake state event');
    assert.deepEqual(rec.runs, []);
});

test('events(): async iterator in seq order; break releases it; it ends on close()', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = connect({ url: d.wsUrl, userId: user, WebSocket });
    t.after(() => c.close());
    const rec = record(c);
    const it = c.events();
    const second = c.events();
    await rec.connected();
    await publishMany(d, user, 10);

    const got = [];
    await withTimeout(
        (async () => {
            for await (const e of it) {
                got.push([e.seq, e.data.i]);
                if (got.length === 6) break;
            }
        })(),
        3000,
        'first iterator',
    );
    assert.deepEqual(got, range(1, 6).map((s) => [s, s - 1]));
    assert.deepEqual(await it.next(), { value: undefined, done: true }, 'break returned the iterator');

    // The second iterator buffered everything; close() lets it drain, then ends it.
    await rec.until((r) => r.events.length >= 10, 3000, '10 events');
    c.close();
    const rest = [];
    await withTimeout(
        (async () => {
            for await (const e of second) rest.push(e.seq);
        })(),
        3000,
        'second iterator ends after close()',
    );
    assert.deepEqual(rest, range(1, 10));
    assert.deepEqual(rec.states.at(-1), { state: 'closed', code: 1000, reason: 'client closed' });
    const late = c.events();
    assert.deepEqual(await late.next(), { value: undefined, done: true }, 'an iterator made after close() is done');
});

test('events({signal}): aborting ends the iteration', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    const ac = new AbortController();
    const it = c.events({ signal: ac.signal });
    await rec.connected();
    await publishMany(d, user, 1);
    assert.equal((await withTimeout(it.next(), 3000, 'first event')).value.seq, 1);
    const pending = it.next();
    ac.abort();
    assert.deepEqual(await withTimeout(pending, 1000, 'abort ends'), { value: undefined, done: true });
});

test('direct messages (publish with connection_id) reach their type and "*" without a seq', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    const typed = [];
    c.on('notice', (e) => typed.push(e));
    await rec.connected();
    const r = await publish(d, { user_id: user, type: 'notice', connection_id: c.connectionId, data: { text: 'hi' } });
    assert.equal(r.delivered, 1);
    await rec.until((x) => x.events.length >= 1, 3000, 'direct message');
    assert.equal(typed.length, 1);
    assert.equal(typed[0].seq, undefined);
    assert.deepEqual(typed[0].data, { text: 'hi' });
    assert.equal(c.lastSeq, 0, 'a direct message does not move lastSeq');
});

test('the app-level ping is answered with {"type":"pong"}; the connection outlives --stale-timeout', async (t) => {
    const d = await daemonFor(t, ['--ping-interval', '0.1', '--stale-timeout', '0.6', '--cleanup-interval', '0.1']);
    const sent = [];
    class SpyWebSocket extends WebSocket {
        send(data, ...rest) {
            sent.push(String(data));
            return super.send(data, ...rest);
        }
    }
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket: SpyWebSocket }));
    const rec = record(c);
    const pings = [];
    c.on('ping', (e) => pings.push(e));
    await rec.connected();
    await rec.until(() => pings.length >= 3, 3000, '3 pings');
    await rec.until(() => sent.filter((s) => s === '{"type":"pong"}').length >= 3, 1000, '3 pongs');
    await sleep(800);
    assert.deepEqual(rec.stateNames(), ['connecting', 'connected'], 'never closed as stale');
});

test('send(): JSON over the socket; the gateway answers an unknown type with an error event', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    await rec.connected();
    assert.equal(c.send({ type: 'hello', text: 'hi' }), true);
    await rec.until((r) => r.errors.length >= 1, 3000, 'error event');
    assert.equal(rec.errors[0].type, 'error');
    assert.equal(rec.errors[0].local, undefined, 'from the gateway');
    assert.match(rec.errors[0].data.error, /unknown message type "hello"/);
    assert.equal(c.state, 'connected', 'the connection stays open');
    c.close();
    assert.throws(() => c.send({ type: 'pong' }), /closed/);
});
