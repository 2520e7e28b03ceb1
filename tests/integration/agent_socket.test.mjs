// The publisher socket GET /v1/agent: the API key in the handshake, one reply frame per
// text frame and in order, errors as {"error","status"} without closing, events reaching
// the user's /ws connections, and what the socket itself receives.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    daemonFor,
    encodeFrame,
    connect,
    connectRefused,
    closeAfter,
    assertJsonError,
    byType,
    sleep,
    uid,
    rawRequest,
    upgradeRequest,
} from './helpers.mjs';
import { agentSocket, agentSocketRefused, agentPublish, rawAgentSocket, stats } from './helpers3.mjs';

const KEY = 'k';
const ARGS = ['--auth', 'none', '--api-key', KEY];

/** A daemon with --api-key k, a user with one /ws connection, and an agent socket. */
async function setup(t, extra = []) {
    const d = await daemonFor(t, [...ARGS, ...extra]);
    const user = uid('agent');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const a = closeAfter(t, await agentSocket(d.port, { key: KEY }));
    return { d, user, c, a };
}

/** Asserts an error reply frame: exactly `status`, `error` (string or RegExp), and `index` if given. */
function assertErrorReply(reply, status, error, index) {
    const ctx = JSON.stringify(reply);
    assert.ok(reply && typeof reply === 'object' && !Array.isArray(reply), `an error object: ${ctx}`);
    assert.equal(reply.status, status, ctx);
    assert.equal(typeof reply.error, 'string', ctx);
    if (error instanceof RegExp) assert.match(reply.error, error, ctx);
    else assert.equal(reply.error, error, ctx);
    if (index !== undefined) assert.equal(reply.index, index, ctx);
    assert.equal(reply.seq, undefined, `no seq in an error reply: ${ctx}`);
}

// ---- the key --------------------------------------------------------------------------------

test('GET /v1/agent without the key is refused with HTTP 401 "api key required", no upgrade', async (t) => {
    const d = await daemonFor(t, ARGS);
    const r = await agentSocketRefused(d.port);
    assertJsonError(assert, r, 401, 'api key required');
});

test('GET /v1/agent with a wrong key is refused with HTTP 401 "invalid api key", no upgrade', async (t) => {
    const d = await daemonFor(t, ARGS);
    const r = await agentSocketRefused(d.port, { key: 'wrong' });
    assertJsonError(assert, r, 401, 'invalid api key');
});

test('GET /v1/agent with the key only in the query string is still refused with 401', async (t) => {
    const d = await daemonFor(t, ARGS);
    const res = await rawRequest(d.port, upgradeRequest(`/v1/agent?api_key=${KEY}&key=${KEY}`));
    assertJsonError(assert, res, 401, 'api key required');
});

test('GET /v1/agent with the right key upgrades (101)', async (t) => {
    const d = await daemonFor(t, ARGS);
    const res = await rawRequest(d.port, upgradeRequest('/v1/agent', { extra: `Authorization: Bearer ${KEY}\r\n` }));
    assert.equal(res.status, 101, res.text);
});

// ---- replies ----------------------------------------------------------------------------

test('one object frame gets one reply {"seq","delivered"} and the event reaches the user\'s /ws connection', async (t) => {
    const { user, c, a } = await setup(t);
    const reply = await agentPublish(a, { user_id: user, type: 'agent_started', run_id: 'r1', thread_id: 't1', data: { agent: 'planner' } });
    assert.deepEqual(reply, { seq: 1, delivered: 1 });
    const m = await c.nextEvent();
    assert.deepEqual(
        [m.type, m.seq, m.user_id, m.run_id, m.thread_id, m.data],
        ['agent_started', 1, user, 'r1', 't1', { agent: 'planner' }],
    );
});

test('200 frames sent without waiting get 200 replies, in order, with consecutive seqs', async (t) => {
    const { user, c, a } = await setup(t);
    const N = 200;
    for (let i = 0; i < N; i++) a.send({ user_id: user, type: 'tick', data: { i } });
    const replies = [];
    for (let i = 0; i < N; i++) replies.push(await a.next(() => true, 5000, `reply #${i + 1}`));
    assert.deepEqual(replies, Array.from({ length: N }, (_, i) => ({ seq: i + 1, delivered: 1 })));
    for (let i = 0; i < N; i++) {
        const m = await c.next(byType('tick'), 3000, `tick ${i}`);
        assert.deepEqual([m.seq, m.data.i], [i + 1, i]);
    }
    await sleep(100);
    assert.equal(a.all.length, N, 'exactly one reply per frame');
});

test('an array frame gets one array reply, one {"seq","delivered"} per item', async (t) => {
    const { user, c, a } = await setup(t);
    const body = [
        { user_id: user, type: 'one', data: {} },
        { user_id: user, type: 'two', data: {} },
        { user_id: user, type: 'three', data: {} },
    ];
    const reply = await agentPublish(a, body);
    assert.deepEqual(reply, [
        { seq: 1, delivered: 1 },
        { seq: 2, delivered: 1 },
        { seq: 3, delivered: 1 },
    ]);
    for (const e of body) assert.equal((await c.nextEvent()).type, e.type);
});

test('a frame with a bad event gets {"error","status":400} and the socket stays usable', async (t) => {
    const { user, c, a } = await setup(t);
    assertErrorReply(await agentPublish(a, { user_id: user, type: 'Bad Type', data: {} }), 400, 'type: malformed');
    assertErrorReply(await agentPublish(a, { type: 'x', data: {} }), 400, 'user_id: required');
    const ok = await agentPublish(a, { user_id: user, type: 'fine', data: {} });
    assert.deepEqual(ok, { seq: 1, delivered: 1 }, 'the refused frames used no seq');
    assert.equal((await c.nextEvent()).type, 'fine');
    assert.ok(a.isOpen);
});

test('an array frame with a bad item gets status 400 with "index" and nothing of it is published', async (t) => {
    const { user, c, a } = await setup(t);
    const reply = await agentPublish(a, [
        { user_id: user, type: 'good', data: {} },
        { user_id: user, type: 'tool_executing', data: { tool: 'search' } },
    ]);
    assertErrorReply(reply, 400, 'data.tool_call_id: required for tool_executing', 1);
    assert.deepEqual(await agentPublish(a, { user_id: user, type: 'after', data: {} }), { seq: 1, delivered: 1 });
    assert.equal((await c.nextEvent()).type, 'after');
});

test('a frame that is not JSON gets status 400 "invalid JSON: ..." and the socket stays usable', async (t) => {
    const { user, a } = await setup(t);
    assertErrorReply(await agentPublish(a, '{"user_id": nope'), 400, /^invalid JSON/);
    assert.deepEqual(await agentPublish(a, { user_id: user, type: 'ok', data: {} }), { seq: 1, delivered: 1 });
});

test('lifecycle errors come back with status 409 and the rule, and the socket stays usable', async (t) => {
    const { user, c, a } = await setup(t);
    assertErrorReply(
        await agentPublish(a, { user_id: user, type: 'agent_thinking', run_id: 'r1', data: { thought: 'hm' } }),
        409,
        'run_id: run not open',
    );
    assert.deepEqual(await agentPublish(a, { user_id: user, type: 'agent_started', run_id: 'r1', data: { agent: 'x' } }), { seq: 1, delivered: 1 });
    assertErrorReply(
        await agentPublish(a, { user_id: user, type: 'agent_started', run_id: 'r1', data: { agent: 'x' } }),
        409,
        'run_id: run already open',
    );
    assertErrorReply(
        await agentPublish(a, [
            { user_id: user, type: 'tool_executing', run_id: 'r1', data: { tool: 't', tool_call_id: 'c1' } },
            { user_id: user, type: 'tool_executing', run_id: 'r1', data: { tool: 't', tool_call_id: 'c1' } },
        ]),
        409,
        'data.tool_call_id: already executing in this run',
        1,
    );
    assert.deepEqual(await agentPublish(a, { user_id: user, type: 'agent_completed', run_id: 'r1', data: { result: 'r' } }), { seq: 2, delivered: 1 });
    assert.deepEqual(
        (await Promise.all([c.nextEvent(), c.nextEvent()])).map((m) => [m.type, m.seq]),
        [['agent_started', 1], ['agent_completed', 2]],
    );
});

test('a direct message to a connection not open for the user gets status 404', async (t) => {
    const { user, a } = await setup(t);
    assertErrorReply(
        await agentPublish(a, { user_id: user, type: 'dm', connection_id: 'c-not-open', data: {} }),
        404,
        'connection_id: not open for this user',
    );
});

test('a repeated idempotency_key on the socket replies with the first seq, delivered 0, duplicate true', async (t) => {
    const { user, a } = await setup(t);
    const e = { user_id: user, type: 'once', idempotency_key: 'k-1', data: {} };
    assert.deepEqual(await agentPublish(a, e), { seq: 1, delivered: 1 });
    assert.deepEqual(await agentPublish(a, e), { seq: 1, delivered: 0, duplicate: true });
});

test('events published on the socket reach every /ws connection of that user and none of another user', async (t) => {
    const { d, user, c, a } = await setup(t);
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    const other = closeAfter(t, await connect(d.port, { user_id: uid('other') }));
    assert.deepEqual(await agentPublish(a, { user_id: user, type: 'hello', data: { x: 1 } }), { seq: 1, delivered: 2 });
    for (const conn of [c, c2]) {
        const m = await conn.nextEvent();
        assert.deepEqual([m.type, m.seq, m.user_id, m.data], ['hello', 1, user, { x: 1 }]);
    }
    await sleep(150);
    assert.equal(other.all.filter((m) => m.type === 'hello').length, 0);
});

test('a message in three fragments is one publish with one reply', async (t) => {
    const { d, user, c } = await setup(t);
    const raw = await rawAgentSocket(d.port, { key: KEY });
    t.after(() => raw.destroy());
    const text = Buffer.from(JSON.stringify({ user_id: user, type: 'frag', data: { s: 'abcdef' } }));
    const cut = [0, 10, 25, text.length];
    await raw.sendFrame(0x1, text.subarray(cut[0], cut[1]), { fin: false });
    await raw.sendFrame(0x0, text.subarray(cut[1], cut[2]), { fin: false });
    await raw.sendFrame(0x0, text.subarray(cut[2], cut[3]), { fin: true });
    assert.deepEqual(await raw.next(() => true, 2000, 'the reply'), { seq: 1, delivered: 1 });
    assert.deepEqual((await c.nextEvent()).data, { s: 'abcdef' });
    await sleep(150);
    assert.equal(raw.messages.length, 1, `one reply only: ${JSON.stringify(raw.messages)}`);
    assert.deepEqual(raw.protocolErrors, []);
});

test('a 100 KB frame (over --max-message-size 64k, under --max-publish-size) is accepted: the agent socket\'s limit is the publish size', async (t) => {
    const { user, c, a } = await setup(t, ['--max-message-size', '64k']);
    const pad = 'y'.repeat(100 * 1024);
    assert.deepEqual(await agentPublish(a, { user_id: user, type: 'big', data: { pad } }), { seq: 1, delivered: 1 });
    assert.equal((await c.nextEvent()).data.pad.length, pad.length);
});

test('a frame over --max-publish-size closes the agent socket with 1009', async (t) => {
    const { user, a } = await setup(t, ['--max-publish-size', '1k']);
    a.send({ user_id: user, type: 'big', data: { pad: 'x'.repeat(2000) } });
    const close = await a.waitClose(3000);
    assert.equal(close.code, 1009, JSON.stringify(close));
});

test('messages pipelined before an oversized one are answered before the 1009 close (their events were published)', async (t) => {
    const { d, user, c } = await setup(t, ['--max-publish-size', '1k']);
    const raw = await rawAgentSocket(d.port, { key: KEY });
    t.after(() => raw.destroy());
    const frames = [1, 2, 3].map((i) => encodeFrame(0x1, Buffer.from(JSON.stringify({ user_id: user, type: 'x', data: { i } }))));
    frames.push(encodeFrame(0x1, Buffer.from(JSON.stringify({ user_id: user, type: 'x', data: { pad: 'x'.repeat(2000) } }))));
    await raw.write(Buffer.concat(frames)); // one write: all four are read in one turn
    const close = await raw.nextClose(3000);
    assert.equal(close.code, 1009, JSON.stringify(close));
    assert.match(close.reason, /max-publish-size/);
    assert.deepEqual(raw.messages, [1, 2, 3].map((seq) => ({ seq, delivered: 1 })), 'the three answers, then the close');
    for (let i = 1; i <= 3; i++) assert.equal((await c.nextEvent()).data.i, i);
});

test('the agent socket receives no events and no ping envelopes, only RFC 6455 pings', async (t) => {
    const { user, a } = await setup(t, ['--ping-interval', '0.2']);
    await agentPublish(a, { user_id: user, type: 'x', data: {} }); // its reply is all it gets
    await sleep(700);
    assert.equal(a.all.length, 1, `nothing but the reply: ${JSON.stringify(a.all)}`);
    assert.ok(a.pingFrames >= 1, `RFC 6455 ping frames: ${a.pingFrames}`);
});

test('the agent socket is not counted by --max-conns', async (t) => {
    const d = await daemonFor(t, [...ARGS, '--max-conns', '1']);
    closeAfter(t, await agentSocket(d.port, { key: KEY }));
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    assert.ok(c.isOpen, 'the one /ws connection fits');
    const refused = await connectRefused(d.port, { user_id: uid() });
    assert.equal(refused.status, 503);
    const s = await stats(d.port, { key: KEY });
    assert.equal(s.total_connections, 1, `only the /ws connection counts: ${JSON.stringify(s)}`);
});
