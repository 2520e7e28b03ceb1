// Identity and keys: JWT (HS256) on /ws, user_id in --auth none, the API key on the
// publish/stats/metrics endpoints, /healthz without a key.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    daemonFor,
    connect,
    connectRefused,
    closeAfter,
    publish,
    publishOk,
    request,
    rawRequest,
    assertJsonError,
    makeJwt,
    nowS,
    uid,
} from './helpers.mjs';

const SECRET = 's3cret';
const JWT = ['--auth', 'jwt', '--jwt-secret', SECRET];

test('jwt mode: /ws without a token is 401 token required', async (t) => {
    const d = await daemonFor(t, JWT);
    const r = await connectRefused(d.port, {});
    assertJsonError(assert, r, 401, 'token required');
});

test('jwt mode: user_id alone (no token) is 401 token required', async (t) => {
    const d = await daemonFor(t, JWT);
    const r = await connectRefused(d.port, { user_id: 'mallory' });
    assertJsonError(assert, r, 401, 'token required');
});

test('jwt mode: a garbage token is 401 with a token: reason', async (t) => {
    const d = await daemonFor(t, JWT);
    const r = await connectRefused(d.port, { token: 'garbage' });
    assertJsonError(assert, r, 401, /^token: /);
});

test('jwt mode: a valid HS256 token connects and the user is its sub', async (t) => {
    const d = await daemonFor(t, JWT);
    const sub = uid('jwt');
    const token = makeJwt({ sub, exp: nowS() + 300 }, SECRET);
    const c = closeAfter(t, await connect(d.port, { token }));
    assert.equal(c.hello.type, 'connected');
    assert.equal(c.hello.user_id, sub);
    const r = await publishOk(d.port, { user_id: sub, type: 'agent_started', data: { agent: 'a' } });
    assert.equal(r.delivered, 1);
    const got = await c.nextEvent();
    assert.equal(got.user_id, sub);
    assert.equal(got.type, 'agent_started');
});

test('jwt mode: a user_id query parameter cannot override the token\'s sub', async (t) => {
    const d = await daemonFor(t, JWT);
    const sub = uid('jwt');
    const victim = uid('victim');
    const token = makeJwt({ sub, exp: nowS() + 300 }, SECRET);
    const c = closeAfter(t, await connect(d.port, { token, user_id: victim }));
    assert.equal(c.hello.user_id, sub);
    const r = await publishOk(d.port, { user_id: victim, type: 'secret', data: {} });
    assert.equal(r.delivered, 0, 'the victim has no connection');
});

test('jwt mode: an expired token is 401 token: expired', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: uid(), exp: nowS() - 60 }, SECRET);
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 401, 'token: expired');
});

test('jwt mode: a token signed with another secret is 401 token: bad signature', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: uid(), exp: nowS() + 300 }, 'not-the-secret');
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 401, 'token: bad signature');
});

test('jwt mode: alg none is 401', async (t) => {
    const d = await daemonFor(t, JWT);
    const h = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ sub: uid(), exp: nowS() + 300 })).toString('base64url');
    const r = await connectRefused(d.port, { token: `${h}.${p}.` });
    assertJsonError(assert, r, 401, /^token: /);
});

test('jwt mode: HS512 signed with the right secret is 401 token: alg must be HS256', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: uid(), exp: nowS() + 300 }, SECRET, { alg: 'HS512', typ: 'JWT' });
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 401, 'token: alg must be HS256');
});

test('jwt mode: a token without exp is 401 token: exp required', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: uid() }, SECRET);
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 401, 'token: exp required');
});

test('jwt mode: a token without sub is 401 token: sub required', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ exp: nowS() + 300 }, SECRET);
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 401, 'token: sub required');
});

test('jwt mode: a token whose payload was altered after signing is 401', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: 'alice', exp: nowS() + 300 }, SECRET);
    const [h, , s] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ sub: 'admin', exp: nowS() + 300 })).toString('base64url');
    const r = await connectRefused(d.port, { token: `${h}.${forged}.${s}` });
    assertJsonError(assert, r, 401, 'token: bad signature');
});

test('jwt mode: a token with nbf in the future is 401 token: not yet valid', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: uid(), exp: nowS() + 600, nbf: nowS() + 300 }, SECRET);
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 401, 'token: not yet valid');
});

test('jwt mode: the JWT secret can come from AGENTCAST_JWT_SECRET', async (t) => {
    const d = await daemonFor(t, ['--auth', 'jwt'], { AGENTCAST_JWT_SECRET: SECRET });
    const sub = uid('env');
    const c = closeAfter(t, await connect(d.port, { token: makeJwt({ sub, exp: nowS() + 60 }, SECRET) }));
    assert.equal(c.hello.user_id, sub);
});

test('jwt mode: an upgrade whose Origin matches the Host is accepted', async (t) => {
    const d = await daemonFor(t, JWT);
    const sub = uid('jwt');
    const token = makeJwt({ sub, exp: nowS() + 300 }, SECRET);
    const c = closeAfter(t, await connect(d.port, { token }, { wsOptions: { origin: `http://127.0.0.1:${d.port}` } }));
    assert.equal(c.hello.user_id, sub);
});

test('jwt mode: an upgrade from a foreign Origin is refused with a 4xx JSON error', async (t) => {
    const d = await daemonFor(t, JWT);
    const token = makeJwt({ sub: uid(), exp: nowS() + 300 }, SECRET);
    const r = await connectRefused(d.port, { token }, { wsOptions: { origin: 'http://evil.example' } });
    assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
    assertJsonError(assert, r, r.status);
});

test('auth none: /ws without user_id is 400 user_id required', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none']);
    const r = await connectRefused(d.port, {});
    assertJsonError(assert, r, 400, 'user_id required');
});

test('auth none: a user_id over 256 bytes is 400', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none']);
    const r = await connectRefused(d.port, { user_id: 'u'.repeat(257) });
    assertJsonError(assert, r, 400);
});

test('auth none: a user_id of exactly 256 bytes is accepted', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none']);
    const user = 'u'.repeat(256);
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    assert.equal(c.hello.user_id, user);
});

test('auth none: a user_id with a control character is 400', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none']);
    const r = await connectRefused(d.port, { user_id: 'bad\u0001id' });
    assertJsonError(assert, r, 400);
});

test('auth none: last_seq that is not a non-negative integer is 400', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none']);
    for (const last_seq of ['abc', '-1', '1.5', '1e3', '0x10']) {
        const r = await connectRefused(d.port, { user_id: uid(), last_seq });
        assertJsonError(assert, r, 400, undefined);
    }
});

test('api key: publish without Authorization is 401 api key required', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    const r = await publish(d.port, { user_id: uid(), type: 'note', data: {} });
    assertJsonError(assert, r, 401, 'api key required');
});

test('api key: publish with a wrong key is 401 invalid api key', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    for (const key of ['wrong', 'kk', 'K', '']) {
        const r = await publish(d.port, { user_id: uid(), type: 'note', data: {} }, { key });
        assertJsonError(assert, r, 401, key === '' ? /^(invalid api key|api key required)$/ : 'invalid api key');
    }
});

test('api key: a non-Bearer Authorization scheme is 401', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    const r = await publish(d.port, { user_id: uid(), type: 'note', data: {} }, { headers: { authorization: 'Basic k' } });
    assertJsonError(assert, r, 401);
});

test('api key: a rejected publish delivers nothing and uses no seq', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const bad = await publish(d.port, { user_id: user, type: 'note', data: {} }, { key: 'wrong' });
    assert.equal(bad.status, 401);
    const ok = await publishOk(d.port, { user_id: user, type: 'note', data: { ok: 1 } }, { key: 'k' });
    assert.deepEqual(ok, { seq: 1, delivered: 1 });
    const got = await c.nextEvent();
    assert.deepEqual([got.seq, got.data], [1, { ok: 1 }]);
});

test('api key: /v1/stats and /metrics need the key; with it they answer 200', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    for (const path of ['/v1/stats', '/metrics']) {
        assertJsonError(assert, await request(d.port, path), 401, 'api key required');
        assertJsonError(assert, await request(d.port, path, { key: 'nope' }), 401, 'invalid api key');
        const ok = await request(d.port, path, { key: 'k' });
        assert.equal(ok.status, 200, `${path} with the key: ${ok.text}`);
    }
});

test('api key: /healthz never needs the key', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    const r = await request(d.port, '/healthz');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { status: 'ok', broker: 'up' });
});

test('api key: /ws does not need the api key (user auth is separate)', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    assert.equal(c.hello.type, 'connected');
});

test('api key: the key can come from AGENTCAST_API_KEY', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none'], { AGENTCAST_API_KEY: 'envkey' });
    assertJsonError(assert, await publish(d.port, { user_id: uid(), type: 'n', data: {} }), 401, 'api key required');
    const ok = await publish(d.port, { user_id: uid(), type: 'n', data: {} }, { key: 'envkey' });
    assert.equal(ok.status, 200, ok.text);
});

test('api key: a 401 on a raw keep-alive request is a JSON error', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none', '--api-key', 'k']);
    const body = JSON.stringify({ user_id: 'u', type: 'n', data: {} });
    const res = await rawRequest(
        d.port,
        `POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    assertJsonError(assert, res, 401, 'api key required');
});
