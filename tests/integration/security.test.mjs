// Origins, inbound rate limits and the handshake rate: --allowed-origins, --client-rate,
// --handshake-rate. Isolation across users is covered in auth and delivery tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonFor, connect, connectRefused, closeAfter, publishOk, request, RawWs, uid, sleep } from './helpers.mjs';

test('--auth=none without --allowed-origins accepts any Origin', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    closeAfter(t, await connect(d.port, { user_id: uid() }, { wsOptions: { origin: 'https://anything.example' } }));
});

test('--allowed-origins: a listed Origin is accepted (case and trailing slash ignored)', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--allowed-origins', 'https://app.example.com, http://localhost:3000/']);
    closeAfter(t, await connect(d.port, { user_id: uid() }, { wsOptions: { origin: 'https://APP.example.com' } }));
    closeAfter(t, await connect(d.port, { user_id: uid() }, { wsOptions: { origin: 'http://localhost:3000' } }));
});

test('--allowed-origins: an Origin not listed is 403 origin: not allowed, and its user receives nothing', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--allowed-origins', 'https://app.example.com']);
    const user = uid();
    const r = await connectRefused(d.port, { user_id: user }, { wsOptions: { origin: 'https://app.example.com.evil.example' } });
    assert.equal(r.status, 403);
    assert.deepEqual(r.json, { error: 'origin: not allowed' });
    const p = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(p.delivered, 0);
});

test('--allowed-origins: a client without Origin (a server) is not refused for lacking one', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--allowed-origins', 'https://app.example.com']);
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    const first = await ws.next((m) => m.type === 'connected', 2000);
    assert.equal(first.type, 'connected');
    ws.destroy();
});

test('--allowed-origins=* accepts any Origin even in jwt mode', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--allowed-origins', '*']);
    closeAfter(t, await connect(d.port, { user_id: uid() }, { wsOptions: { origin: 'http://x.example:81' } }));
});

test('--client-rate 20: a burst over twice the rate is closed with 1008; the user\'s other connection is unaffected', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--client-rate', '20']);
    const user = uid();
    const calm = closeAfter(t, await connect(d.port, { user_id: user }));
    const ws = await RawWs.connect(d.port, `/ws?user_id=${user}`);
    try {
        await ws.next((m) => m.type === 'connected', 2000);
        for (let i = 0; i < 100; i++) ws.sendJson({ type: 'pong' });
        const close = await ws.nextClose(3000);
        assert.equal(close.code, 1008);
    } finally {
        ws.destroy();
    }
    const p = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(p.delivered, 1);
    assert.equal((await calm.nextEvent()).type, 'note');
    const stats = JSON.parse((await request(d.port, '/v1/stats')).text);
    assert.ok(stats.closes.rate_limited_1008_429 >= 1, JSON.stringify(stats.closes));
});

test('--client-rate 20: a client sending within the rate is never closed', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--client-rate', '20']);
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    try {
        await ws.next((m) => m.type === 'connected', 2000);
        for (let i = 0; i < 30; i++) {
            ws.sendJson({ type: 'pong' });
            await sleep(60); // ~16 per second, under 20
        }
        ws.sendJson({ type: 'nope' });
        const e = await ws.next((m) => m.type === 'error', 2000);
        assert.equal(e.type, 'error');
    } finally {
        ws.destroy();
    }
});

test('--handshake-rate 2: the fifth upgrade from one address within a second is 429 with Retry-After', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--handshake-rate', '2', '--max-conns-per-user', '10']);
    const user = uid();
    for (let i = 0; i < 4; i++) closeAfter(t, await connect(d.port, { user_id: user }));
    const r = await connectRefused(d.port, { user_id: user });
    assert.equal(r.status, 429);
    assert.equal(r.headers['retry-after'], '1');
    assert.match(r.json.error, /handshake rate/);
    await sleep(1100);
    closeAfter(t, await connect(d.port, { user_id: user }));
});

test('--handshake-rate does not limit plain HTTP requests', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--handshake-rate', '1']);
    for (let i = 0; i < 20; i++) assert.equal((await request(d.port, '/healthz')).status, 200);
});
