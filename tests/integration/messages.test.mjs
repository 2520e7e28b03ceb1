// User messages (the demo agent and the webhook), the operator's disconnect, the static
// pages and the Prometheus metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { daemonFor, connect, closeAfter, publishOk, request, rawRequest, uid, withTimeout, sleep } from './helpers.mjs';

const byType = (t) => (m) => m.type === t;

test('--demo: a user_message gets a whole live run: started, thinking, calculator tool, answer', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--demo']);
    const user = uid('demo');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    c.ws.send(JSON.stringify({ type: 'user_message', thread_id: 'th1', text: 'what is (6*7)+1?' }));
    const question = await c.next(byType('user_message'), 5000);
    assert.equal(question.data.text, 'what is (6*7)+1?');
    const started = await c.next(byType('agent_started'), 5000);
    assert.equal(started.seq, question.seq + 1, 'the question is in the stream before the run');
    assert.equal(started.thread_id, 'th1');
    assert.ok(started.run_id);
    const exec = await c.next(byType('tool_executing'), 8000);
    assert.equal(exec.data.tool, 'calculator');
    const done = await c.next(byType('tool_completed'), 8000);
    assert.equal(done.data.tool_call_id, exec.data.tool_call_id);
    assert.deepEqual(done.data.result, { value: 43 });
    const answer = await c.next(byType('agent_completed'), 8000);
    assert.match(answer.data.result, /= 43/);
    const all = c.inbox.all.filter((m) => m.seq);
    for (let i = 1; i < all.length; i++) assert.equal(all[i].seq, all[i - 1].seq + 1);
    assert.ok(all.filter((m) => m.type === 'agent_thinking').length >= 5, 'thinking streams in chunks');
    assert.ok(all.slice(1).every((m) => m.run_id === started.run_id));
});

test('--demo: both tabs of a user see the run; another user sees nothing', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--demo']);
    const user = uid('demo');
    const a = closeAfter(t, await connect(d.port, { user_id: user }));
    const b = closeAfter(t, await connect(d.port, { user_id: user }));
    const other = closeAfter(t, await connect(d.port, { user_id: uid('other') }));
    a.ws.send(JSON.stringify({ type: 'user_message', text: 'count these four words' }));
    const ea = await a.next(byType('agent_completed'), 8000);
    const eb = await b.next(byType('agent_completed'), 8000);
    assert.equal(ea.seq, eb.seq);
    assert.match(ea.data.result, /4 words/);
    await sleep(100);
    assert.equal(other.inbox.all.filter((m) => m.seq).length, 0);
});

test('a user_message without text gets an error envelope; the connection stays', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--demo']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    c.ws.send(JSON.stringify({ type: 'user_message' }));
    const e = await c.next(byType('error'), 2000);
    assert.match(e.data.error, /^text: required/);
});

test('without --demo or --message-webhook a user_message is refused with an error envelope', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    c.ws.send(JSON.stringify({ type: 'user_message', text: 'hi' }));
    const e = await c.next(byType('error'), 2000);
    assert.match(e.data.error, /no agent is listening/);
});

function webhookServer(statuses) {
    const got = [];
    const server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (s) => (body += s));
        req.on('end', () => {
            got.push({ method: req.method, url: req.url, type: req.headers['content-type'], body: JSON.parse(body) });
            const status = statuses.length > 1 ? statuses.shift() : statuses[0];
            res.writeHead(status, { 'content-type': 'text/plain' });
            res.end('ok');
        });
    });
    return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, got, port: server.address().port })));
}

test('--message-webhook: a message is POSTed as JSON, retried after 500s until a 200', async (t) => {
    const w = await webhookServer([500, 503, 200]);
    t.after(() => w.server.close());
    const d = await daemonFor(t, ['--auth=none', '--message-webhook', `http://127.0.0.1:${w.port}/hook`]);
    const user = uid('hook');
    const c = closeAfter(t, await connect(d.port, { user_id: user, thread_id: 'tt' }));
    c.ws.send(JSON.stringify({ type: 'user_message', text: 'hello agent' }));
    await withTimeout((async () => { while (w.got.length < 3) await sleep(20); })(), 5000, 'three attempts');
    const m = w.got[2];
    assert.equal(m.method, 'POST');
    assert.equal(m.url, '/hook');
    assert.equal(m.type, 'application/json');
    assert.equal(m.body.user_id, user);
    assert.equal(m.body.thread_id, 'tt');
    assert.equal(m.body.text, 'hello agent');
    assert.equal(m.body.connection_id, c.hello.data.connection_id);
    const ev = await c.next(byType('user_message'), 2000);
    assert.equal(m.body.seq, ev.seq, 'the webhook gets the seq of the message in the stream');
    await sleep(300);
    assert.equal(c.inbox.all.filter((x) => x.type === 'error').length, 0, 'delivered: no error envelope');
});

test('--message-webhook: when every attempt fails the sender gets an error envelope', async (t) => {
    const w = await webhookServer([500]);
    t.after(() => w.server.close());
    const d = await daemonFor(t, ['--auth=none', '--message-webhook', `http://127.0.0.1:${w.port}/hook`]);
    const c = closeAfter(t, await connect(d.port, { user_id: uid('hook') }));
    c.ws.send(JSON.stringify({ type: 'user_message', text: 'anyone?' }));
    const e = await c.next(byType('error'), 8000);
    assert.match(e.data.error, /message not delivered: webhook answered 500/);
    assert.equal(e.data.attempts, 4);
    assert.equal(w.got.length, 4);
});

test('--message-webhook: an unreachable webhook gives the sender an error envelope', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--message-webhook', 'http://127.0.0.1:1/none']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid('hook') }));
    c.ws.send(JSON.stringify({ type: 'user_message', text: 'anyone?' }));
    const e = await c.next(byType('error'), 8000);
    assert.match(e.data.error, /cannot connect to the webhook/);
});

test('POST /v1/disconnect {connection_id}: closing then close 4003; the client may resume', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--api-key', 'k']);
    const user = uid('op');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const other = closeAfter(t, await connect(d.port, { user_id: user }));
    const id = c.hello.data.connection_id;
    const unauth = await request(d.port, '/v1/disconnect', { method: 'POST', body: JSON.stringify({ connection_id: id }) });
    assert.equal(unauth.status, 401);
    const r = await request(d.port, '/v1/disconnect', { method: 'POST', key: 'k', body: JSON.stringify({ connection_id: id }) });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text), { disconnected: 1 });
    const closing = await c.next(byType('closing'), 2000);
    assert.equal(closing.data.code, 4003);
    assert.equal((await c.closed).code, 4003);
    await publishOk(d.port, { user_id: user, type: 'note', data: {} }, { key: 'k' });
    assert.equal((await other.nextEvent()).type, 'note', 'the other tab stays');
    const again = closeAfter(t, await connect(d.port, { user_id: user, last_seq: 0 }));
    assert.equal((await again.nextEvent()).type, 'note', 'resume after an operator close');
});

test('POST /v1/disconnect {user_id} closes every connection of the user; unknown ids are 404', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const user = uid('op');
    const a = closeAfter(t, await connect(d.port, { user_id: user }));
    const b = closeAfter(t, await connect(d.port, { user_id: user }));
    const r = await request(d.port, '/v1/disconnect', { method: 'POST', body: JSON.stringify({ user_id: user }) });
    assert.deepEqual(JSON.parse(r.text), { disconnected: 2 });
    assert.equal((await a.closed).code, 4003);
    assert.equal((await b.closed).code, 4003);
    const nf = await request(d.port, '/v1/disconnect', { method: 'POST', body: JSON.stringify({ connection_id: 'c0000000000000001' }) });
    assert.equal(nf.status, 404);
    const bad = await request(d.port, '/v1/disconnect', { method: 'POST', body: '{}' });
    assert.equal(bad.status, 400);
});

test('static pages: /, /dashboard and /clients/js/agentcast.js are served; traversal is 404', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const index = await request(d.port, '/');
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type'), /^text\/html/);
    const dash = await request(d.port, '/dashboard');
    assert.equal(dash.status, 200);
    const js = await request(d.port, '/clients/js/agentcast.js');
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    assert.match(js.text, /export function connect/);
    // fetch() normalises '..' away, so traversal is tried over a raw socket.
    for (const p of ['/static/../Makefile', '/static/..%2fMakefile', '/static/.hidden', '/clients/js/../../Makefile', '/static/nope.js']) {
        const raw = await rawRequest(d.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        assert.equal(raw.status, 404, p);
    }
});

test('/metrics has the publish-to-send histogram and closes by code after traffic', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const user = uid('m');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    for (let i = 0; i < 5; i++) await publishOk(d.port, { user_id: user, type: 'note', data: { i } });
    for (let i = 0; i < 5; i++) await c.nextEvent();
    await request(d.port, '/v1/disconnect', { method: 'POST', body: JSON.stringify({ user_id: user }) });
    await c.closed;
    const m = (await request(d.port, '/metrics')).text;
    assert.match(m, /^# TYPE agentcast_publish_to_send_seconds histogram$/m);
    assert.match(m, /^agentcast_publish_to_send_seconds_count 5$/m);
    assert.match(m, /^agentcast_publish_to_send_seconds_bucket\{le="\+Inf"\} 5$/m);
    assert.match(m, /^agentcast_closes_total\{code="4003"\} 1$/m);
    assert.match(m, /^agentcast_events_total\{type="custom"\} 5$/m);
});
