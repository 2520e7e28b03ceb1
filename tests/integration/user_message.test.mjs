// The conversation is an event stream (issue #13): a person's chat message becomes a
// `user_message` event of their own stream (seq, thread_id, data with the text and the
// sender's connection_id) before the agent gets it, so every connection of that user sees it,
// it is retained and replayed like any event, and no other user sees it. Publishers cannot
// publish the type. The same with two nodes on one Redis, and with Redis gone (the sender is
// told, the agent is not handed the message).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
    daemonFor,
    connect,
    closeAfter,
    publish,
    request,
    byType,
    uid,
    sleep,
    waitFor,
    withTimeout,
    TS_RE,
} from './helpers.mjs';
import { agentSocket, agentPublish } from './helpers3.mjs';
import { RedisServer, redisFor, redisSkipReason, clusterFor, healthz } from './redis_helpers.mjs';

const SKIP = redisSkipReason();

/** A webhook receiver on 127.0.0.1 that answers 200 and records the bodies. */
function webhookServer(t) {
    const got = [];
    const server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (s) => (body += s));
        req.on('end', () => {
            got.push(JSON.parse(body));
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end('ok');
        });
    });
    t.after(() => new Promise((r) => server.close(r)));
    return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ got, url: `http://127.0.0.1:${server.address().port}/hook` })));
}

const events = (c) => c.inbox.all.filter((m) => typeof m.seq === 'number');

test('a user_message is an event of the sender\'s stream: seq, thread_id, text, connection_id; every connection of the user gets it, another user does not', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--demo']);
    const user = uid('um');
    const a = closeAfter(t, await connect(d.port, { user_id: user, thread_id: 'th-a' }));
    const b = closeAfter(t, await connect(d.port, { user_id: user }));
    const other = closeAfter(t, await connect(d.port, { user_id: uid('other') }));

    a.ws.send(JSON.stringify({ type: 'user_message', text: 'what is 2+3?', thread_id: 't9' }));
    const qa = await a.next(byType('user_message'), 5000);
    const qb = await b.next(byType('user_message'), 5000);
    assert.equal(qa.seq, 1, 'the first event of a new stream');
    assert.equal(qa.user_id, user);
    assert.equal(qa.thread_id, 't9');
    assert.match(qa.timestamp, TS_RE);
    assert.equal(qa.run_id, undefined);
    assert.deepEqual(qa.data, { text: 'what is 2+3?', thread_id: 't9', connection_id: a.hello.data.connection_id });
    assert.deepEqual(qb, qa, 'the other tab gets the same event');
    // The agent was handed the message after it was in the stream: its run comes later.
    const started = await b.next(byType('agent_started'), 5000);
    assert.ok(started.seq > qa.seq);
    await b.next(byType('agent_completed'), 10000);

    // Without thread_id the message carries the sender's connection label.
    a.ws.send(JSON.stringify({ type: 'user_message', text: 'and 1+1?' }));
    const q2 = await b.next(byType('user_message'), 5000);
    assert.equal(q2.thread_id, 'th-a');
    assert.deepEqual(q2.data, { text: 'and 1+1?', thread_id: 'th-a', connection_id: a.hello.data.connection_id });
    await b.next(byType('agent_completed'), 10000);
    assert.equal(events(other).length, 0, 'another user sees none of it');
});

test('a user_message is retained and replayed: last_seq=0 rebuilds the conversation, a resume gets what it missed; stats and metrics count it', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--demo']);
    const user = uid('um');
    const a = closeAfter(t, await connect(d.port, { user_id: user }));
    a.ws.send(JSON.stringify({ type: 'user_message', text: 'count my words please' }));
    const q = await a.next(byType('user_message'), 5000);
    const done = await a.next(byType('agent_completed'), 10000);
    const live = events(a);

    const all = closeAfter(t, await connect(d.port, { user_id: user, last_seq: 0, epoch: a.hello.data.epoch }));
    assert.equal(all.hello.data.recovered, true);
    const replayed = [];
    while (replayed.length < live.length) replayed.push(await all.next((m) => typeof m.seq === 'number', 3000));
    assert.deepEqual(replayed, live, 'the question, then the run, as they were delivered live');
    assert.equal(replayed[0].type, 'user_message');

    const resumed = closeAfter(t, await connect(d.port, { user_id: user, last_seq: q.seq - 1, epoch: a.hello.data.epoch }));
    assert.equal(resumed.hello.data.recovered, true);
    assert.deepEqual(await resumed.next((m) => typeof m.seq === 'number', 3000), q);
    assert.equal(done.seq, live[live.length - 1].seq);

    const st = (await request(d.port, '/v1/stats')).json;
    assert.equal(st.events_by_type.user_message, 1);
    assert.equal(st.events_by_type.custom, 0, 'not counted as a custom type');
    assert.equal(st.user_messages_total, 1);
    const m = (await request(d.port, '/metrics')).text;
    assert.match(m, /^agentcast_events_total\{type="user_message"\} 1$/m);
});

test('publishers cannot publish user_message: 400 type: reserved on /v1/publish (object and array) and on /v1/agent', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const user = uid('um');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const one = await publish(d.port, { user_id: user, type: 'user_message', data: { text: 'I never said that' } });
    assert.equal(one.status, 400);
    assert.deepEqual(one.json, { error: 'type: reserved' });
    const arr = await publish(d.port, [{ user_id: user, type: 'note' }, { user_id: user, type: 'user_message', data: { text: 'x' } }]);
    assert.equal(arr.status, 400);
    assert.deepEqual(arr.json, { error: 'type: reserved', index: 1 });
    const agent = await agentSocket(d.port);
    t.after(() => agent.ws.terminate());
    const r = await agentPublish(agent, JSON.stringify({ user_id: user, type: 'user_message', data: { text: 'x' } }));
    assert.deepEqual(r, { error: 'type: reserved', status: 400 });
    await sleep(100);
    assert.equal(events(c).length, 0, 'nothing was published (an array is all or nothing)');
});

test('without an agent a user_message is refused and not published', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const user = uid('um');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    c.ws.send(JSON.stringify({ type: 'user_message', text: 'hello?' }));
    const e = await c.next(byType('error'), 3000);
    assert.match(e.data.error, /no agent is listening/);
    const again = closeAfter(t, await connect(d.port, { user_id: user, last_seq: 0 }));
    assert.equal(again.hello.data.last_seq, 0, 'no seq was used');
    assert.equal((await request(d.port, '/v1/stats')).json.events_by_type.user_message, 0);
});

test('a text with a NUL character is refused with an error envelope', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--demo']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid('um') }));
    c.ws.send('{"type":"user_message","text":"a\\u0000b"}');
    const e = await c.next(byType('error'), 3000);
    assert.match(e.data.error, /^text: must not contain NUL/);
    assert.equal(events(c).length, 0);
});

// ---- several nodes on one Redis --------------------------------------------------------

let sharedP = null;
function sharedRedis() {
    sharedP ??= new RedisServer().start();
    return sharedP;
}
after(async () => {
    if (sharedP) await (await sharedP.catch(() => null))?.dispose();
});

test('--broker redis: a message sent on node A is in the user\'s stream on node B (same seq), replayed there, and reaches the agent with its seq', { skip: SKIP }, async (t) => {
    const redis = await sharedRedis();
    const hook = await webhookServer(t);
    const cl = await clusterFor(t, redis, 2, { extra: ['--message-webhook', hook.url] });
    const [A, B] = cl.nodes;
    const user = uid('um');
    const a = cl.own(await connect(A.port, { user_id: user }));
    const b = cl.own(await connect(B.port, { user_id: user }));
    const other = cl.own(await connect(B.port, { user_id: uid('other') }));

    a.ws.send(JSON.stringify({ type: 'user_message', text: 'across nodes', thread_id: 'tx' }));
    const qa = await a.next(byType('user_message'), 5000);
    const qb = await b.next(byType('user_message'), 5000);
    assert.deepEqual(qb, qa);
    assert.deepEqual(qa.data, { text: 'across nodes', thread_id: 'tx', connection_id: a.hello.data.connection_id });
    await waitFor(() => hook.got.length === 1, 5000, 'the webhook call');
    assert.equal(hook.got[0].seq, qa.seq, 'handed on with its seq, once published');
    assert.equal(hook.got[0].text, 'across nodes');

    // An agent answers through node B; the stream holds the question and then the answer.
    const pub = await publish(B.port, { user_id: user, type: 'agent_completed', data: { result: 'yes' } });
    assert.equal(pub.status, 200, pub.text);
    assert.equal(pub.json.seq, qa.seq + 1);
    const replay = cl.own(await connect(B.port, { user_id: user, last_seq: 0, epoch: a.hello.data.epoch }));
    assert.equal(replay.hello.data.recovered, true);
    assert.deepEqual(await replay.next((m) => typeof m.seq === 'number', 3000), qa);
    assert.equal((await replay.next((m) => typeof m.seq === 'number', 3000)).type, 'agent_completed');

    const refused = await publish(A.port, { user_id: user, type: 'user_message', data: { text: 'x' } });
    assert.equal(refused.status, 400);
    assert.deepEqual(refused.json, { error: 'type: reserved' });
    await sleep(100);
    assert.equal(events(other).length, 0, 'another user on node B sees nothing');
});

test('--broker redis: with Redis gone the sender is told the message was not published and the agent never gets it', { skip: SKIP }, async (t) => {
    const redis = await redisFor(t);
    const hook = await webhookServer(t);
    const cl = await clusterFor(t, redis, 1, { extra: ['--message-webhook', hook.url] });
    const [A] = cl.nodes;
    const c = cl.own(await connect(A.port, { user_id: uid('um') }));
    await redis.stop();
    await withTimeout((async () => {
        while ((await healthz(A.port)).status !== 503) await sleep(25);
    })(), 5000, '/healthz 503 after Redis stopped');
    c.ws.send(JSON.stringify({ type: 'user_message', text: 'is anyone there?' }));
    const e = await c.next(byType('error'), 5000);
    assert.match(e.data.error, /^message not published: broker unavailable/);
    await sleep(200);
    assert.equal(hook.got.length, 0, 'not handed to the agent');
    assert.equal(events(c).length, 0);
    assert.equal(c.ws.readyState, 1, 'the connection stays open');
});
