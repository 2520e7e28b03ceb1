// --auth=proxy: cookie sessions. Each /ws upgrade is POSTed (Cookie, Authorization, Origin,
// query) to a backend run by the test, which allows ({"user_id"}), refuses (401/403), fails
// (5xx), answers late or never. Upgrades waiting on it never hold up other clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { daemonFor, connect, connectRefused, closeAfter, publishOk, assertJsonError, withTimeout, waitFor, upgradeRequest } from './helpers.mjs';

/** A backend: `decide(req, body)` returns {status, body} or a promise of one. */
async function backend(decide) {
    const b = { calls: [] };
    b.server = http.createServer((req, res) => {
        let text = '';
        req.on('data', (s) => (text += s));
        req.on('end', async () => {
            const call = { method: req.method, url: req.url, headers: req.headers, body: JSON.parse(text || 'null') };
            b.calls.push(call);
            const answer = await decide(call);
            if (answer === null) return; // never answers
            res.writeHead(answer.status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(answer.body));
        });
    });
    await new Promise((resolve) => b.server.listen(0, '127.0.0.1', resolve));
    b.url = `http://127.0.0.1:${b.server.address().port}/auth/ws`;
    b.close = () => new Promise((resolve) => { b.server.closeAllConnections(); b.server.close(resolve); });
    return b;
}

const sessions = { 'session=alice': 'alice', 'session=bob': 'bob' };
const bySession = (call) => {
    const user = sessions[call.headers.cookie];
    if (user) return { status: 200, body: { user_id: user } };
    if (call.headers.cookie === 'session=banned') return { status: 403, body: { error: 'account suspended' } };
    return { status: 401, body: { error: 'no session' } };
};

const withCookie = (cookie, extra = {}) => ({ wsOptions: { headers: { cookie, ...extra } } });

async function proxyDaemon(t, b, args = []) {
    return daemonFor(t, ['--auth=proxy', '--auth-proxy-url', b.url, ...args]);
}

test('allowed: the backend gets Cookie, Authorization, Origin and the query; its user_id is the user', async (t) => {
    const b = await backend(bySession);
    t.after(() => b.close());
    const d = await proxyDaemon(t, b);
    const origin = `http://127.0.0.1:${d.port}`;
    const c = closeAfter(t, await connect(d.port, { thread_id: 't1', foo: 'bar' },
        withCookie('session=alice', { authorization: 'Bearer abc', origin })));
    assert.equal(c.hello.user_id, 'alice');
    assert.equal(c.hello.thread_id, 't1');
    assert.equal(b.calls.length, 1);
    const call = b.calls[0];
    assert.equal(call.method, 'POST');
    assert.equal(call.url, '/auth/ws');
    assert.equal(call.headers['content-type'], 'application/json');
    assert.equal(call.headers.cookie, 'session=alice');
    assert.equal(call.headers.authorization, 'Bearer abc');
    assert.equal(call.headers.origin, origin);
    assert.deepEqual(call.body, { path: '/ws', query: 'thread_id=t1&foo=bar' });
    await publishOk(d.port, { user_id: 'alice', type: 'agent_started', data: { agent: 'a' } });
    assert.equal((await c.next((m) => m.type === 'agent_started')).user_id, 'alice');
});

test('refused: 401 and 403 from the backend refuse the upgrade with that status and its reason', async (t) => {
    const b = await backend(bySession);
    t.after(() => b.close());
    const d = await proxyDaemon(t, b);
    assertJsonError(assert, await connectRefused(d.port, {}, withCookie('session=nobody')), 401, 'auth proxy: no session');
    assertJsonError(assert, await connectRefused(d.port, {}, withCookie('session=banned')), 403, 'auth proxy: account suspended');
    assertJsonError(assert, await connectRefused(d.port, {}), 401, 'auth proxy: no session');
});

test('a 5xx or an answer without a valid user_id refuses with 503', async (t) => {
    const answers = [{ status: 500, body: {} }, { status: 200, body: { user: 'x' } }, { status: 200, body: { user_id: 'a\nb' } }];
    const b = await backend(() => answers.shift());
    t.after(() => b.close());
    const d = await proxyDaemon(t, b);
    assertJsonError(assert, await connectRefused(d.port, {}, withCookie('s=1')), 503, 'auth proxy: answered 500');
    assertJsonError(assert, await connectRefused(d.port, {}, withCookie('s=1')), 503, /answer without a valid user_id/);
    assertJsonError(assert, await connectRefused(d.port, {}, withCookie('s=1')), 503, /answer without a valid user_id/);
});

test('a backend that never answers: 503 after --outbound-timeout', async (t) => {
    const b = await backend(() => null);
    t.after(() => b.close());
    const d = await proxyDaemon(t, b, ['--outbound-timeout', '0.5']);
    const r = await connectRefused(d.port, {}, { ...withCookie('session=alice'), timeoutMs: 8000 });
    assertJsonError(assert, r, 503, 'auth proxy: timed out');
    assert.ok(r.headers['retry-after']);
});

test('an unreachable backend: 503', async (t) => {
    const d = await daemonFor(t, ['--auth=proxy', '--auth-proxy-url', 'http://127.0.0.1:1/auth']);
    assertJsonError(assert, await connectRefused(d.port, {}, withCookie('session=alice')), 503, 'auth proxy: unreachable');
});

test('a slow backend: other clients connect and get events while one upgrade waits', async (t) => {
    let release;
    const released = new Promise((resolve) => (release = resolve));
    const b = await backend(async (call) => {
        if (call.headers.cookie === 'session=slow') {
            await released;
            return { status: 200, body: { user_id: 'slowpoke' } };
        }
        return bySession(call);
    });
    t.after(() => b.close());
    const d = await proxyDaemon(t, b, ['--outbound-timeout', '30', '--handshake-timeout', '30']);
    const slow = connect(d.port, {}, { ...withCookie('session=slow'), timeoutMs: 20000 });
    await withTimeout((async () => { while (!b.calls.some((c) => c.headers.cookie === 'session=slow')) await new Promise((r) => setTimeout(r, 10)); })(), 5000, 'the slow call reaching the backend');
    // While it waits: other upgrades, publishes and deliveries go on.
    const fast = closeAfter(t, await connect(d.port, {}, withCookie('session=bob')));
    assert.equal(fast.hello.user_id, 'bob');
    await publishOk(d.port, { user_id: 'bob', type: 'agent_started', data: { agent: 'a' } });
    assert.equal((await fast.next((m) => m.type === 'agent_started')).user_id, 'bob');
    release();
    const s = closeAfter(t, await slow);
    assert.equal(s.hello.user_id, 'slowpoke');
});

test('--auth-proxy-cache-ttl: an allowed answer is reused for the same cookie, not for another', async (t) => {
    const b = await backend(bySession);
    t.after(() => b.close());
    const d = await proxyDaemon(t, b, ['--auth-proxy-cache-ttl', '600']);
    closeAfter(t, await connect(d.port, {}, withCookie('session=alice')));
    const again = closeAfter(t, await connect(d.port, {}, withCookie('session=alice')));
    assert.equal(again.hello.user_id, 'alice');
    assert.equal(b.calls.length, 1);
    const other = closeAfter(t, await connect(d.port, {}, withCookie('session=bob')));
    assert.equal(other.hello.user_id, 'bob');
    assert.equal(b.calls.length, 2);
    // Refusals are never cached.
    await connectRefused(d.port, {}, withCookie('session=nobody'));
    await connectRefused(d.port, {}, withCookie('session=nobody'));
    assert.equal(b.calls.length, 4);
});

test('without the cache every upgrade asks the backend', async (t) => {
    const b = await backend(bySession);
    t.after(() => b.close());
    const d = await proxyDaemon(t, b);
    closeAfter(t, await connect(d.port, {}, withCookie('session=alice')));
    closeAfter(t, await connect(d.port, {}, withCookie('session=alice')));
    assert.equal(b.calls.length, 2);
});

test('--auth=proxy: a browser Origin of another site is refused before the backend is asked', async (t) => {
    const b = await backend(bySession);
    t.after(() => b.close());
    const d = await proxyDaemon(t, b);
    const r = await connectRefused(d.port, {}, withCookie('session=alice', { origin: 'https://evil.example' }));
    assertJsonError(assert, r, 403, 'origin: not allowed');
    assert.equal(b.calls.length, 0);
});

test('an upgrade whose --handshake-timeout passes while the backend thinks: 503 with a JSON reason, closed, the late answer dropped', async (t) => {
    let release;
    const released = new Promise((resolve) => (release = resolve));
    const b = await backend(async (call) => {
        if (call.headers.cookie === 'session=late') {
            await released;
            return { status: 200, body: { user_id: 'ghost' } };
        }
        return bySession(call);
    });
    t.after(() => b.close());
    const d = await proxyDaemon(t, b, ['--outbound-timeout', '60', '--handshake-timeout', '1', '--log-level', 'debug']);
    const sock = net.connect(d.port, '127.0.0.1');
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const closed = new Promise((resolve) => sock.on('close', resolve));
    let answer = '';
    sock.on('data', (s) => (answer += s));
    sock.on('error', () => {}); // a reset after the answer would still be a close
    sock.write(upgradeRequest('/ws', { extra: 'Cookie: session=late\r\n' }));
    await waitFor(() => b.calls.length === 1, 5000, 'the call reaching the backend');
    await withTimeout(closed, 10000, 'the gateway closing the waiting connection at its deadline');
    assert.match(answer, /^HTTP\/1\.1 503 /, answer);
    assert.match(answer, /\r\nRetry-After: 1\r\n/i, answer);
    assert.ok(answer.endsWith('{"error":"timed out waiting for the answer (--handshake-timeout)"}'), answer);
    release();
    // The gateway serves the next client; the ghost never became a user.
    const c = closeAfter(t, await connect(d.port, {}, withCookie('session=alice')));
    assert.equal(c.hello.user_id, 'alice');
    const stats = await fetch(`http://127.0.0.1:${d.port}/v1/stats`).then((r) => r.json());
    assert.equal(stats.total_connections, 1);
    assert.ok(!d.logs.some((l) => /user=ghost/.test(l)), d.logs.join('\n'));
});
