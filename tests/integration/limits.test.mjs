// Connection limits and liveness: the per-user cap (eviction 4001), the global cap (503),
// staleness (4002), app-level and RFC 6455 pings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    daemonFor,
    connect,
    connectRefused,
    closeAfter,
    publishOk,
    settleUnexpected,
    assertJsonError,
    byType,
    sleep,
    uid,
    RawWs,
    RawHttp,
    upgradeRequest,
    TS_RE,
    waitFor,
    request,
} from './helpers.mjs';

const NONE = ['--auth', 'none'];

test('a fourth connection of a user evicts the oldest with closing then close 4001; the others stay open', async (t) => {
    const d = await daemonFor(t, NONE);
    const user = uid();
    const c1 = closeAfter(t, await connect(d.port, { user_id: user }));
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    const c3 = closeAfter(t, await connect(d.port, { user_id: user }));
    const c4 = closeAfter(t, await connect(d.port, { user_id: user }));

    const close = await c1.waitClose(3000);
    assert.equal(close.code, 4001, `close code of the evicted connection: ${JSON.stringify(close)}`);
    const nonPing = c1.all.filter((m) => m.type !== 'ping');
    assert.equal(nonPing.length, 2, `evicted connection got connected then closing: ${JSON.stringify(c1.all)}`);
    const closing = nonPing[1];
    assert.equal(closing.type, 'closing');
    assert.match(closing.timestamp, TS_RE);
    assert.equal(closing.data.code, 4001);
    assert.equal(typeof closing.data.reason, 'string');

    await sleep(150);
    for (const [i, c] of [c2, c3, c4].entries()) assert.ok(c.isOpen, `connection ${i + 2} stays open`);
    const r = await publishOk(d.port, { user_id: user, type: 'after_evict', data: {} });
    assert.equal(r.delivered, 3);
    for (const c of [c2, c3, c4]) assert.equal((await c.nextEvent()).type, 'after_evict');
});

test('eviction picks the oldest connection by creation time, again and again', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns-per-user', '2']);
    const user = uid();
    const c1 = closeAfter(t, await connect(d.port, { user_id: user }));
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    const c3 = closeAfter(t, await connect(d.port, { user_id: user }));
    assert.equal((await c1.waitClose()).code, 4001);
    await sleep(50);
    assert.ok(c2.isOpen, 'second connection still open after the first eviction');
    const c4 = closeAfter(t, await connect(d.port, { user_id: user }));
    assert.equal((await c2.waitClose()).code, 4001);
    await sleep(100);
    assert.ok(c3.isOpen && c4.isOpen, 'the two newest stay open');
});

test('the per-user cap does not count other users\' connections', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns-per-user', '1']);
    const a = closeAfter(t, await connect(d.port, { user_id: uid() }));
    const b = closeAfter(t, await connect(d.port, { user_id: uid() }));
    await sleep(200);
    assert.ok(a.isOpen && b.isOpen);
    assert.equal(a.closeInfo, null);
});

test('--max-conns 2: the third upgrade is refused with HTTP 503 and a JSON error', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns', '2']);
    closeAfter(t, await connect(d.port, { user_id: uid() }));
    closeAfter(t, await connect(d.port, { user_id: uid() }));
    const refused = await connectRefused(d.port, { user_id: uid() });
    assertJsonError(assert, refused, 503, 'max-conns reached');
});

test('--max-conns 2: a raw third upgrade gets 503 and the connection is closed', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns', '2']);
    closeAfter(t, await connect(d.port, { user_id: uid() }));
    closeAfter(t, await connect(d.port, { user_id: uid() }));
    const c = await RawHttp.connect(d.port);
    t.after(() => c.destroy());
    await c.write(upgradeRequest(`/ws?user_id=${uid()}`));
    const res = await c.response();
    assertJsonError(assert, res, 503, 'max-conns reached');
    assert.ok(await c.waitClose(2000), 'connection closed after the refusal');
});

test('--max-conns frees a slot when a connection closes', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns', '1']);
    const c1 = await connect(d.port, { user_id: uid() });
    await c1.close();
    const c2 = await waitFor(
        async () => {
            try {
                return await connect(d.port, { user_id: uid() });
            } catch {
                return null;
            }
        },
        2000,
        'a connection after the only slot was freed',
    );
    closeAfter(t, c2);
    assert.equal(c2.hello.type, 'connected');
});

test('--max-conns does not count HTTP requests: publish and healthz work at the cap', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-conns', '1']);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const h = await request(d.port, '/healthz');
    assert.equal(h.status, 200);
    await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal((await c.nextEvent()).type, 'note');
});

test('a raw client that completes the handshake and then sends nothing is closed with 4002', async (t) => {
    const d = await daemonFor(t, [...NONE, '--stale-timeout', '0.5', '--cleanup-interval', '0.1', '--ping-interval', '0.2']);
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    const connected = await ws.next(byType('connected'));
    assert.equal(connected.type, 'connected');
    const started = Date.now();
    const close = await ws.nextClose(3000);
    const elapsed = Date.now() - started;
    assert.equal(close.code, 4002, `close frame: ${JSON.stringify(close)}`);
    assert.ok(elapsed >= 300, `not closed before the stale timeout (${elapsed} ms)`);
    const closing = ws.messages.find((m) => m.type === 'closing');
    assert.ok(closing, `closing message before the close frame: ${JSON.stringify(ws.messages)}`);
    assert.equal(closing.data.code, 4002);
});

test('a stale close does not affect the user\'s live connection', async (t) => {
    const d = await daemonFor(t, [...NONE, '--stale-timeout', '0.5', '--cleanup-interval', '0.1', '--ping-interval', '0.2']);
    const user = uid();
    const silent = await RawWs.connect(d.port, `/ws?user_id=${user}`);
    t.after(() => silent.destroy());
    const live = closeAfter(t, await connect(d.port, { user_id: user }));
    live.ws.on('message', () => {});
    assert.equal((await silent.nextClose(3000)).code, 4002);
    assert.ok(live.isOpen, 'the answering connection stays open');
    const r = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(r.delivered, 1);
    assert.equal((await live.nextEvent()).type, 'note');
});

test('app-level ping envelopes arrive every --ping-interval', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.2']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    const pings = [];
    for (let i = 0; i < 3; i++) pings.push(await c.next(byType('ping'), 2000, `app ping ${i}`));
    for (const p of pings) {
        assert.match(p.timestamp, TS_RE);
        assert.equal(p.seq, undefined, 'ping carries no seq');
        assert.ok(!('user_id' in p) || typeof p.user_id === 'string');
    }
});

test('RFC 6455 ping frames arrive every --ping-interval', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.2']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    await waitFor(() => c.pingFrames >= 2, 2000, 'two ping frames');
});

test('a raw client receives both the app ping and a ping frame', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.2']);
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    await ws.next(byType('ping'), 2000, 'app ping');
    await ws.nextFrame((f) => f.opcode === 0x9, 2000, 'a ping frame');
});

test('a ws client answering pings and sending {"type":"pong"} is not closed as stale', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.2', '--stale-timeout', '0.5', '--cleanup-interval', '0.1']);
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    c.ws.on('message', (raw) => {
        try {
            if (JSON.parse(raw.toString()).type === 'ping') c.send({ type: 'pong' });
        } catch {
            /* not JSON */
        }
    });
    await sleep(1500);
    assert.ok(c.isOpen, `still open after 3x the stale timeout; close=${JSON.stringify(c.closeInfo)}`);
    assert.deepEqual(c.all.filter((m) => m.type === 'error'), [], 'pong is understood, no error message');
    const r = await publishOk(d.port, { user_id: user, type: 'note', data: {} });
    assert.equal(r.delivered, 1);
    assert.equal((await c.nextEvent()).type, 'note');
});

test('a client that only sends {"type":"pong"} text messages (no pong frames) is not stale', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.2', '--stale-timeout', '0.5', '--cleanup-interval', '0.1']);
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    const timer = setInterval(() => ws.sendJson({ type: 'pong' }).catch(() => {}), 150);
    t.after(() => clearInterval(timer));
    await sleep(1500);
    clearInterval(timer);
    assert.equal(ws.closeFrame, null, `no close frame: ${JSON.stringify(ws.closeFrame)}`);
    assert.equal(ws.http.eof, false, 'TCP still open');
    assert.deepEqual(ws.messages.filter((m) => m.type === 'error'), []);
});

test('a raw client that only answers ping frames with pong frames is not stale', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.2', '--stale-timeout', '0.5', '--cleanup-interval', '0.1']);
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    let answered = 0;
    const loop = (async () => {
        const end = Date.now() + 1500;
        while (Date.now() < end) {
            try {
                const f = await ws.nextFrame((fr) => fr.opcode === 0x9, Math.max(1, end - Date.now()), 'ping frame');
                await ws.sendPong(f.payload);
                answered += 1;
            } catch {
                break;
            }
        }
    })();
    await loop;
    assert.ok(answered >= 3, `answered ${answered} ping frames`);
    assert.equal(ws.closeFrame, null, `no close frame: ${JSON.stringify(ws.closeFrame)}`);
});

test('stale connections are swept even when many are idle at once', async (t) => {
    const d = await daemonFor(t, [...NONE, '--stale-timeout', '0.5', '--cleanup-interval', '0.1', '--ping-interval', '5']);
    const raws = [];
    for (let i = 0; i < 10; i++) raws.push(await RawWs.connect(d.port, `/ws?user_id=${uid()}`));
    t.after(() => raws.forEach((r) => r.destroy()));
    const codes = await Promise.all(raws.map((r) => r.nextClose(3000).then((c) => c.code)));
    assert.deepEqual(codes, Array(10).fill(4002));
    // Complete the close handshake, as a client that wakes up would.
    await Promise.all(raws.map((r) => r.sendClose(4002).catch(() => {})));
    const s = await waitFor(
        async () => {
            const r = await request(d.port, '/v1/stats');
            return r.json && r.json.total_connections === 0 ? r.json : null;
        },
        2000,
        'stats total_connections back to 0',
    );
    assert.equal(s.total_connections, 0);
});

test('settled users receive nothing unexpected while idle (only pings)', async (t) => {
    const d = await daemonFor(t, [...NONE, '--ping-interval', '0.1']);
    const c = closeAfter(t, await connect(d.port, { user_id: uid() }));
    assert.deepEqual(await settleUnexpected(c, 400), []);
});

// Publishes 64 KiB events until `delivered` falls below `conns` (the slow one was dropped).
async function floodUntilDropped(port, user, conns, { size = 64 * 1024, max = 400 } = {}) {
    const pad = 'z'.repeat(size);
    for (let i = 0; i < max; i++) {
        const r = await publishOk(port, { user_id: user, type: 'flood', data: { i, pad } });
        if (r.delivered < conns) return { dropped: true, sent: i + 1 };
    }
    return { dropped: false, sent: max };
}

test('a connection whose unsent backlog stays over --max-queue-bytes for --slow-timeout is closed with 4008', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-queue-bytes', '65536', '--slow-timeout', '0.2', '--ping-interval', '30']);
    const user = uid();
    const ws = await RawWs.connect(d.port, `/ws?user_id=${user}`);
    t.after(() => ws.destroy());
    await ws.next(byType('connected'));
    ws.sock.pause(); // stop reading: the kernel buffers fill, then the server's queue grows
    const r = await floodUntilDropped(d.port, user, 1);
    assert.ok(r.dropped, `the slow connection was dropped (delivered 0) within ${r.sent} events of 64 KiB`);
    ws.sock.resume();
    const close = await ws.nextClose(5000);
    assert.equal(close.code, 4008);
});

test('a slow connection does not hold back a fast connection of the same user', async (t) => {
    const d = await daemonFor(t, [...NONE, '--max-queue-bytes', '65536', '--slow-timeout', '0.2', '--ping-interval', '30']);
    const user = uid();
    const slow = await RawWs.connect(d.port, `/ws?user_id=${user}`);
    t.after(() => slow.destroy());
    await slow.next(byType('connected'));
    const fast = closeAfter(t, await connect(d.port, { user_id: user }));
    slow.sock.pause();
    const r = await floodUntilDropped(d.port, user, 2);
    assert.ok(r.dropped, 'the slow connection was dropped');
    for (let i = 0; i < r.sent; i++) {
        const m = await fast.next(byType('flood'), 3000, `flood ${i} on the fast connection`);
        assert.equal(m.seq, i + 1);
    }
    assert.ok(fast.isOpen, 'the fast connection stays open');
    slow.destroy();
});
