// The WebSocket side from a raw client: error messages for frames the server cannot act on,
// RFC 6455 protocol violations (1002, 1007, 1009), control frames, and the close handshake.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
    startDaemon,
    daemonFor,
    connect,
    closeAfter,
    publishOk,
    request,
    RawWs,
    byType,
    waitFor,
    uid,
    TS_RE,
} from './helpers.mjs';

let d;
before(async () => {
    d = await startDaemon(['--auth', 'none', '--max-message-size', '1024']);
});
after(async () => {
    await d?.stop();
});

async function rawUser(t, port = d.port) {
    const user = uid();
    const ws = await RawWs.connect(port, `/ws?user_id=${encodeURIComponent(user)}`);
    t.after(() => ws.destroy());
    await ws.next(byType('connected'));
    return { ws, user };
}

async function assertStillServed(ws, user, port = d.port) {
    const r = await publishOk(port, { user_id: user, type: 'still_here', data: {} });
    assert.equal(r.delivered, 1, 'the connection is still registered');
    const m = await ws.next(byType('still_here'));
    assert.equal(m.type, 'still_here');
    assert.equal(ws.closeFrame, null);
}

function assertErrorMessage(m) {
    assert.equal(m.type, 'error');
    assert.match(m.timestamp, TS_RE);
    assert.equal(m.seq, undefined);
    assert.equal(typeof m.data?.error, 'string');
    assert.ok(m.data.error.length > 0);
}

test('a text message that is not JSON gets an error message and the connection stays open', async (t) => {
    const { ws, user } = await rawUser(t);
    await ws.sendText('this is not json');
    assertErrorMessage(await ws.next(byType('error')));
    await assertStillServed(ws, user);
});

test('a JSON message of an unknown type gets an error message and the connection stays open', async (t) => {
    const { ws, user } = await rawUser(t);
    await ws.sendJson({ type: 'frobnicate' });
    assertErrorMessage(await ws.next(byType('error')));
    await assertStillServed(ws, user);
});

test('a binary frame gets an error message and the connection stays open', async (t) => {
    const { ws, user } = await rawUser(t);
    await ws.sendFrame(0x2, Buffer.from([1, 2, 3]));
    assertErrorMessage(await ws.next(byType('error')));
    await assertStillServed(ws, user);
});

test('{"type":"pong"} gets no reply', async (t) => {
    const { ws, user } = await rawUser(t);
    await ws.sendJson({ type: 'pong' });
    await assertStillServed(ws, user);
    assert.deepEqual(ws.messages.filter((m) => m.type === 'error'), []);
});

test('a fragmented text message is reassembled ({"type":"pong"} in three frames)', async (t) => {
    const { ws, user } = await rawUser(t);
    const s = Buffer.from('{"type":"pong"}');
    await ws.sendFrame(0x1, s.subarray(0, 4), { fin: false });
    await ws.sendFrame(0x0, s.subarray(4, 9), { fin: false });
    await ws.sendFrame(0x9, Buffer.from('mid')); // a control frame between fragments is allowed
    await ws.sendFrame(0x0, s.subarray(9), { fin: true });
    const pong = await ws.nextFrame((f) => f.opcode === 0xa, 2000, 'pong frame');
    assert.equal(pong.payload.toString(), 'mid');
    await assertStillServed(ws, user);
    assert.deepEqual(ws.messages.filter((m) => m.type === 'error'), []);
});

test('a ping frame from the client is answered with a pong carrying the same payload', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x9, Buffer.from('hello-ping'));
    const pong = await ws.nextFrame((f) => f.opcode === 0xa, 2000, 'pong frame');
    assert.equal(pong.payload.toString(), 'hello-ping');
});

test('an unmasked client frame is closed with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x1, Buffer.from('{"type":"pong"}'), { mask: false });
    assert.equal((await ws.nextClose()).code, 1002);
    assert.ok(await ws.waitEnd(3000));
});

test('a frame with RSV bits set is closed with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x1, Buffer.from('{"type":"pong"}'), { rsv: 4 });
    assert.equal((await ws.nextClose()).code, 1002);
});

test('a reserved opcode is closed with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x3, Buffer.from('x'));
    assert.equal((await ws.nextClose()).code, 1002);
});

test('a continuation frame with no message open is closed with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x0, Buffer.from('x'));
    assert.equal((await ws.nextClose()).code, 1002);
});

test('a control frame over 125 bytes is closed with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x9, Buffer.alloc(126, 0x61));
    assert.equal((await ws.nextClose()).code, 1002);
});

test('a text message with invalid UTF-8 is closed with 1007', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x1, Buffer.from([0x7b, 0xc3, 0x28, 0x7d]));
    assert.equal((await ws.nextClose()).code, 1007);
});

test('a text message truncated inside a UTF-8 character is closed with 1007', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x1, Buffer.from([0x61, 0xe2, 0x82]));
    assert.equal((await ws.nextClose()).code, 1007);
});

test('a message over --max-message-size is closed with 1009', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendText(JSON.stringify({ type: 'pong', pad: 'p'.repeat(2000) }));
    assert.equal((await ws.nextClose()).code, 1009);
});

test('a fragmented message whose total exceeds --max-message-size is closed with 1009', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendFrame(0x1, Buffer.alloc(600, 0x61), { fin: false });
    await ws.sendFrame(0x0, Buffer.alloc(600, 0x61), { fin: true });
    assert.equal((await ws.nextClose()).code, 1009);
});

test('a message of exactly --max-message-size is accepted', async (t) => {
    const { ws, user } = await rawUser(t);
    const base = JSON.stringify({ type: 'pong', pad: '' });
    await ws.sendText(JSON.stringify({ type: 'pong', pad: 'p'.repeat(1024 - base.length) }));
    await assertStillServed(ws, user);
});

test('a client close 1000 is echoed and the connection is unregistered', async (t) => {
    const { ws, user } = await rawUser(t);
    await ws.sendClose(1000, 'bye');
    const close = await ws.nextClose();
    assert.equal(close.code, 1000);
    assert.ok(await ws.waitEnd(3000), 'server closes TCP after the close handshake');
    const r = await waitFor(
        async () => {
            const p = await publishOk(d.port, { user_id: user, type: 'after_close', data: {} });
            return p.delivered === 0 ? p : null;
        },
        2000,
        'delivered 0 after the close',
    );
    assert.equal(r.delivered, 0);
});

test('a client that drops TCP without a close frame is unregistered', async (t) => {
    const { ws, user } = await rawUser(t);
    ws.destroy();
    const r = await waitFor(
        async () => {
            const p = await publishOk(d.port, { user_id: user, type: 'after_drop', data: {} });
            return p.delivered === 0 ? p : null;
        },
        2000,
        'delivered 0 after the drop',
    );
    assert.equal(r.delivered, 0);
});

test('a close frame with an invalid code (1005) is answered with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.sendClose(1005);
    assert.equal((await ws.nextClose()).code, 1002);
});

test('frames from the server are unmasked, final, and carry one JSON object each', async (t) => {
    const dd = await daemonFor(t, ['--auth', 'none', '--ping-interval', '0.1']);
    const { ws, user } = await rawUser(t, dd.port);
    await publishOk(dd.port, { user_id: user, type: 'note', data: { a: 1 } });
    await ws.next(byType('note'));
    await ws.next(byType('ping'));
    assert.deepEqual(ws.protocolErrors, []);
    for (const f of ws.inbox.all.filter((x) => x.opcode === 0x1)) {
        assert.equal(typeof f.json, 'object');
        assert.ok(!Array.isArray(f.json));
    }
});

test('a ws client sending garbage does not disturb another user', async (t) => {
    const { ws } = await rawUser(t);
    const other = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: other }));
    await ws.sendFrame(0x1, Buffer.from([0xff, 0xfe]));
    await ws.nextClose();
    await publishOk(d.port, { user_id: other, type: 'ok', data: {} });
    assert.equal((await c.nextEvent()).type, 'ok');
    assert.equal((await request(d.port, '/healthz')).status, 200);
});

test('a frame whose 64-bit length has the top bit set is closed with 1002', async (t) => {
    const { ws } = await rawUser(t);
    await ws.write(Buffer.from([0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]));
    assert.equal((await ws.nextClose()).code, 1002);
});

test('a frame header announcing 1 GiB is closed with 1009 at once, without waiting for the payload', async (t) => {
    const { ws } = await rawUser(t);
    const head = Buffer.from([0x81, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4]);
    await ws.write(head);
    assert.equal((await ws.nextClose(2000)).code, 1009);
});

test('200 simultaneous upgrades all get connected', async (t) => {
    const dd = await daemonFor(t, ['--auth', 'none']);
    const clients = await Promise.all(
        Array.from({ length: 200 }, (_, i) => connect(dd.port, { user_id: `sim-${i % 70}` }, { timeoutMs: 5000 })),
    );
    t.after(() => clients.forEach((c) => c.terminate()));
    for (const c of clients) assert.equal(c.hello.type, 'connected');
    const s = await request(dd.port, '/v1/stats');
    assert.equal(s.json.total_connections, 200);
});
