// The HTTP layer: routing (404/405), malformed requests (400/431), upgrade refusals
// (426/400), the handshake timeout, keep-alive and pipelining, and survival after bad input.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
    startDaemon,
    daemonFor,
    connect,
    closeAfter,
    publishOk,
    request,
    rawRequest,
    RawHttp,
    RawWs,
    upgradeRequest,
    assertJsonError,
    sleep,
    uid,
} from './helpers.mjs';

let d;
before(async () => {
    d = await startDaemon(['--auth', 'none']);
});
after(async () => {
    await d?.stop();
});

test('an unknown path is 404 with a JSON error', async () => {
    assertJsonError(assert, await request(d.port, '/nope'), 404);
    assertJsonError(assert, await request(d.port, '/v1/publish/extra', { method: 'POST', body: '{}' }), 404);
});

test('GET /v1/publish is 405 with an Allow header naming POST', async () => {
    const r = await request(d.port, '/v1/publish');
    assertJsonError(assert, r, 405);
    assert.match(r.headers.get('allow') ?? '', /\bPOST\b/, `Allow: ${r.headers.get('allow')}`);
});

test('DELETE /v1/publish is 405', async () => {
    assertJsonError(assert, await request(d.port, '/v1/publish', { method: 'DELETE' }), 405);
});

test('POST /healthz and POST /v1/stats are 405 with Allow GET', async () => {
    for (const path of ['/healthz', '/v1/stats']) {
        const r = await request(d.port, path, { method: 'POST', body: '{}' });
        assertJsonError(assert, r, 405);
        assert.match(r.headers.get('allow') ?? '', /\bGET\b/, `${path} Allow: ${r.headers.get('allow')}`);
    }
});

test('a malformed request line is 400 and the connection is closed', async () => {
    const res = await rawRequest(d.port, 'GARBAGE\r\n\r\n');
    assertJsonError(assert, res, 400);
    assert.ok(res.closedAfter, 'connection closed after the 400');
});

test('a request with an invalid HTTP version is 400', async () => {
    const res = await rawRequest(d.port, 'GET /healthz HTTP/9.9x\r\nHost: x\r\n\r\n');
    assert.ok(res.status === 400 || res.status === 505, `status ${res.status}`);
    assertJsonError(assert, res, res.status);
});

test('binary junk instead of HTTP is 400 and closed', async () => {
    const res = await rawRequest(d.port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]));
    assertJsonError(assert, res, 400);
    assert.ok(res.closedAfter);
});

test('headers over 16 KiB are 431 with a JSON error', async () => {
    const res = await rawRequest(d.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
    assertJsonError(assert, res, 431);
});

test('many headers together over 16 KiB are 431', async () => {
    let h = '';
    for (let i = 0; i < 400; i++) h += `X-H${i}: ${'v'.repeat(50)}\r\n`;
    const res = await rawRequest(d.port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${h}\r\n`);
    assertJsonError(assert, res, 431);
});

test('an 8 KiB header is accepted', async () => {
    const res = await rawRequest(d.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(8 * 1024)}\r\n\r\n`);
    assert.equal(res.status, 200, res.text);
});

test('GET /ws without an upgrade is 426 websocket upgrade required', async () => {
    const r = await request(d.port, `/ws?user_id=${uid()}`);
    assertJsonError(assert, r, 426, 'websocket upgrade required');
});

test('a bad Sec-WebSocket-Key is 400', async () => {
    for (const key of ['short', 'AAAAAAAAAAAAAAAAAAAAAA', '!!!!!!!!!!!!!!!!!!!!!!==', `${Buffer.alloc(17).toString('base64')}`]) {
        const res = await rawRequest(d.port, upgradeRequest(`/ws?user_id=${uid()}`, { key }));
        assertJsonError(assert, res, 400);
        assert.ok(res.closedAfter, `closed after the 400 for key ${key}`);
    }
});

test('a missing Sec-WebSocket-Key is 400', async () => {
    const res = await rawRequest(d.port, upgradeRequest(`/ws?user_id=${uid()}`, { key: null }));
    assertJsonError(assert, res, 400);
});

test('Sec-WebSocket-Version 8 is 426 with Sec-WebSocket-Version: 13', async () => {
    const res = await rawRequest(d.port, upgradeRequest(`/ws?user_id=${uid()}`, { version: '8' }));
    assertJsonError(assert, res, 426);
    assert.equal(res.headers['sec-websocket-version'], '13');
});

test('a valid raw upgrade gets 101 with the right Sec-WebSocket-Accept, then connected', async () => {
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    try {
        assert.equal(ws.response.status, 101);
        assert.match(ws.response.headers.upgrade ?? '', /^websocket$/i);
        assert.match(ws.response.headers.connection ?? '', /upgrade/i);
        const m = await ws.next();
        assert.equal(m.type, 'connected');
        assert.deepEqual(ws.protocolErrors, []);
    } finally {
        ws.destroy();
    }
});

test('HTTP keep-alive: two requests on one socket are both answered', async () => {
    const c = await RawHttp.connect(d.port);
    try {
        await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        const r1 = await c.response();
        assert.equal(r1.status, 200);
        assert.deepEqual(r1.json, { status: 'ok', broker: 'up' });
        await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        const r2 = await c.response();
        assert.equal(r2.status, 200);
        assert.deepEqual(r2.json, { status: 'ok', broker: 'up' });
    } finally {
        c.destroy();
    }
});

test('HTTP keep-alive: a publish and then a stats request on one socket', async () => {
    const user = uid();
    const body = JSON.stringify({ user_id: user, type: 'note', data: {} });
    const c = await RawHttp.connect(d.port);
    try {
        await c.write(`POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        const r1 = await c.response();
        assert.equal(r1.status, 200, r1.text);
        assert.deepEqual(r1.json, { seq: 1, delivered: 0 });
        await c.write('GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n');
        const r2 = await c.response();
        assert.equal(r2.status, 200, r2.text);
        assert.equal(typeof r2.json.total_users, 'number');
    } finally {
        c.destroy();
    }
});

test('HTTP pipelining: three requests in one write get three responses in order', async () => {
    const u = uid();
    const b1 = JSON.stringify({ user_id: u, type: 'one', data: {} });
    const b2 = JSON.stringify({ user_id: u, type: 'two', data: {} });
    const c = await RawHttp.connect(d.port);
    try {
        await c.write(
            `POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: ${b1.length}\r\n\r\n${b1}` +
                'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n' +
                `POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: ${b2.length}\r\n\r\n${b2}`,
        );
        const r1 = await c.response();
        const r2 = await c.response();
        const r3 = await c.response();
        assert.deepEqual([r1.status, r2.status, r3.status], [200, 404, 200]);
        assert.equal(r1.json.seq, 1);
        assert.equal(r3.json.seq, 2);
    } finally {
        c.destroy();
    }
});

test('HTTP/1.1 Connection: close is honoured', async () => {
    const res = await rawRequest(d.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 200);
    assert.ok(res.closedAfter, 'server closed the connection');
});

test('a chunked publish body is accepted', async () => {
    const user = uid();
    const body = JSON.stringify({ user_id: user, type: 'note', data: { chunked: true } });
    const half = Math.floor(body.length / 2);
    const chunks = [body.slice(0, half), body.slice(half)];
    const wire = chunks.map((s) => `${s.length.toString(16)}\r\n${s}\r\n`).join('') + '0\r\n\r\n';
    const res = await rawRequest(d.port, `POST /v1/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${wire}`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { seq: 1, delivered: 0 });
});

test('a client that sends half a request is closed after --handshake-timeout', async (t) => {
    const short = await daemonFor(t, ['--auth', 'none', '--handshake-timeout', '0.3']);
    const c = await RawHttp.connect(short.port);
    t.after(() => c.destroy());
    const started = Date.now();
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const closed = await c.waitClose(3000);
    const elapsed = Date.now() - started;
    assert.ok(closed, 'closed by the server within 3 s');
    assert.ok(elapsed >= 200, `not closed before the timeout (${elapsed} ms)`);
    assert.ok(elapsed < 2000, `closed soon after the timeout (${elapsed} ms)`);
});

test('a half-sent WebSocket upgrade is closed after --handshake-timeout', async (t) => {
    const short = await daemonFor(t, ['--auth', 'none', '--handshake-timeout', '0.3']);
    const c = await RawHttp.connect(short.port);
    t.after(() => c.destroy());
    await c.write(upgradeRequest(`/ws?user_id=${uid()}`).slice(0, 40));
    assert.ok(await c.waitClose(3000), 'closed by the server');
});

test('a slow-loris client trickling header bytes is still closed after --handshake-timeout', async (t) => {
    const short = await daemonFor(t, ['--auth', 'none', '--handshake-timeout', '0.3']);
    const c = await RawHttp.connect(short.port);
    t.after(() => c.destroy());
    const started = Date.now();
    let i = 0;
    const timer = setInterval(() => {
        if (!c.eof) c.write(`X-Trickle-${i++}: a\r\n`);
    }, 50);
    t.after(() => clearInterval(timer));
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const closed = await c.waitClose(3000);
    clearInterval(timer);
    assert.ok(closed, 'closed while still trickling');
    assert.ok(Date.now() - started < 2000, `closed in ${Date.now() - started} ms`);
});

test('an idle keep-alive connection is closed after --handshake-timeout', async (t) => {
    const short = await daemonFor(t, ['--auth', 'none', '--handshake-timeout', '0.3']);
    const c = await RawHttp.connect(short.port);
    t.after(() => c.destroy());
    await c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal((await c.response()).status, 200);
    assert.ok(await c.waitClose(3000), 'idle keep-alive connection closed');
});

test('a connection that never sends anything is closed after --handshake-timeout', async (t) => {
    const short = await daemonFor(t, ['--auth', 'none', '--handshake-timeout', '0.3']);
    const c = await RawHttp.connect(short.port);
    t.after(() => c.destroy());
    assert.ok(await c.waitClose(3000), 'silent TCP connection closed');
});

test('the handshake timeout does not close an established WebSocket', async (t) => {
    const short = await daemonFor(t, ['--auth', 'none', '--handshake-timeout', '0.3']);
    const user = uid();
    const c = closeAfter(t, await connect(short.port, { user_id: user }));
    await sleep(800);
    assert.ok(c.isOpen, `still open: ${JSON.stringify(c.closeInfo)}`);
    await publishOk(short.port, { user_id: user, type: 'note', data: {} });
    assert.equal((await c.nextEvent()).type, 'note');
});

test('after malformed input of every kind, a normal client still connects and receives', async (t) => {
    const bad = [
        'GARBAGE\r\n\r\n',
        `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`,
        upgradeRequest(`/ws?user_id=${uid()}`, { key: 'short' }),
        upgradeRequest(`/ws?user_id=${uid()}`, { version: '8' }),
        upgradeRequest('/ws'),
        'POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{{{{',
        'POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n',
        'POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n{}}}',
        'GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
        Buffer.from([0, 0, 0, 0, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a]),
        '\r\n\r\n\r\n\r\n',
    ];
    for (const b of bad) {
        const c = await RawHttp.connect(d.port);
        try {
            await c.write(b);
            await Promise.race([c.response(1000).catch(() => null), c.waitClose(1000)]);
        } finally {
            c.destroy();
        }
    }
    // A raw WebSocket that speaks garbage after the handshake.
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    await ws.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    await ws.waitEnd(2000);
    ws.destroy();

    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const r = await publishOk(d.port, { user_id: user, type: 'still_alive', data: {} });
    assert.equal(r.delivered, 1);
    assert.equal((await c.nextEvent()).type, 'still_alive');
    const h = await request(d.port, '/healthz');
    assert.equal(h.status, 200);
    assert.equal(d.proc.exitCode, null, 'daemon still running');
});

test('an upgrade with Connection: keep-alive, Upgrade and Upgrade: WebSocket (as Firefox sends) is accepted', async () => {
    const c = await RawHttp.connect(d.port);
    try {
        const key = Buffer.from('0123456789abcdef').toString('base64');
        await c.write(
            `GET /ws?user_id=${uid()} HTTP/1.1\r\nHost: 127.0.0.1:${d.port}\r\nUpgrade: WebSocket\r\n` +
                `Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
        const res = await c.response();
        assert.equal(res.status, 101, res.text);
    } finally {
        c.destroy();
    }
});

test('an HTTP/1.0 request is answered and the connection closed', async () => {
    const res = await rawRequest(d.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { status: 'ok', broker: 'up' });
    assert.ok(res.closedAfter, 'closed after the HTTP/1.0 response');
});

test('percent-encoded user_id and thread_id in the /ws query are decoded', async (t) => {
    const user = `${uid()}@example.com/é`;
    const c = closeAfter(t, await connect(d.port, { user_id: user, thread_id: 'a&b=c' }));
    assert.equal(c.hello.user_id, user);
    assert.equal(c.hello.thread_id, 'a&b=c');
    const r = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(r.delivered, 1);
    assert.equal((await c.nextEvent()).user_id, user);
});

test('a WebSocket frame sent in the same TCP write as the upgrade request is processed', async () => {
    const { encodeFrame } = await import('./helpers.mjs');
    const c = await RawHttp.connect(d.port);
    try {
        await c.write(Buffer.concat([
            Buffer.from(upgradeRequest(`/ws?user_id=${uid()}`)),
            encodeFrame(0x9, Buffer.from('early')),
        ]));
        const res = await c.response();
        assert.equal(res.status, 101);
        const ws = new RawWs(c, res);
        const pong = await ws.nextFrame((f) => f.opcode === 0xa, 2000, 'pong to the early ping');
        assert.equal(pong.payload.toString(), 'early');
    } finally {
        c.destroy();
    }
});

test('client frames split into single bytes are reassembled', async (t) => {
    const { encodeFrame } = await import('./helpers.mjs');
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    const bytes = Buffer.concat([encodeFrame(0x1, Buffer.from('{"type":"pong"}')), encodeFrame(0x9, Buffer.from('bytewise'))]);
    for (const b of bytes) {
        await ws.write(Buffer.from([b]));
    }
    const pong = await ws.nextFrame((f) => f.opcode === 0xa, 2000, 'pong');
    assert.equal(pong.payload.toString(), 'bytewise');
    assert.deepEqual(ws.messages.filter((m) => m.type === 'error'), []);
    assert.equal(ws.closeFrame, null);
});

test('several client frames in one TCP write are all processed', async (t) => {
    const { encodeFrame } = await import('./helpers.mjs');
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    await ws.write(Buffer.concat([
        encodeFrame(0x9, Buffer.from('p1')),
        encodeFrame(0x1, Buffer.from('{"type":"pong"}')),
        encodeFrame(0x9, Buffer.from('p2')),
        encodeFrame(0x1, Buffer.from('not json')),
    ]));
    const p1 = await ws.nextFrame((f) => f.opcode === 0xa);
    const p2 = await ws.nextFrame((f) => f.opcode === 0xa);
    assert.deepEqual([p1.payload.toString(), p2.payload.toString()], ['p1', 'p2']);
    await ws.next((m) => m.type === 'error');
});

test('a request line over 16 KiB gets a 4xx JSON error', async () => {
    const res = await rawRequest(d.port, `GET /healthz?${'q'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.ok(res.status === 414 || res.status === 431 || res.status === 400, `status ${res.status}`);
    assertJsonError(assert, res, res.status);
});
