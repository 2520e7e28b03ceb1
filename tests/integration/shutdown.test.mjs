// Shutdown: SIGTERM/SIGINT close every connection with `closing` + 1001 and exit 0.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    startDaemon,
    connect,
    closeAfter,
    publishOk,
    RawWs,
    byType,
    uid,
    withTimeout,
} from './helpers.mjs';

const NONE = ['--auth', 'none'];

async function shutdownCase(t, signal) {
    const d = await startDaemon([...NONE, '--shutdown-timeout', '2']);
    t.after(() => d.stop());
    const u1 = uid();
    const u2 = uid();
    const clients = [
        closeAfter(t, await connect(d.port, { user_id: u1 })),
        closeAfter(t, await connect(d.port, { user_id: u1 })),
        closeAfter(t, await connect(d.port, { user_id: u2 })),
    ];
    const started = Date.now();
    const result = await d.stop({ signal, killAfterMs: 5000 });
    const elapsed = Date.now() - started;
    assert.equal(result.killed, false, `daemon exited by itself; logs:\n${d.logs.join('\n')}`);
    assert.deepEqual({ code: result.code, signal: result.signal }, { code: 0, signal: null }, d.logs.join('\n'));
    assert.ok(elapsed < 3000, `exited within --shutdown-timeout (+slack): ${elapsed} ms`);
    for (const [i, c] of clients.entries()) {
        const close = await c.waitClose(2000);
        assert.equal(close.code, 1001, `client ${i} close code`);
        const closing = c.all.find((m) => m.type === 'closing');
        assert.ok(closing, `client ${i} got a closing message: ${JSON.stringify(c.all)}`);
        assert.equal(closing.data.code, 1001);
    }
}

test('SIGTERM: every open client gets closing + close 1001 and the process exits 0', async (t) => {
    await shutdownCase(t, 'SIGTERM');
});

test('SIGINT: every open client gets close 1001 and the process exits 0', async (t) => {
    await shutdownCase(t, 'SIGINT');
});

test('SIGTERM with no connections exits 0 promptly', async (t) => {
    const d = await startDaemon(NONE);
    t.after(() => d.stop());
    const started = Date.now();
    const r = await d.stop();
    assert.deepEqual({ code: r.code, signal: r.signal, killed: r.killed }, { code: 0, signal: null, killed: false });
    assert.ok(Date.now() - started < 2000, 'prompt exit');
});

test('SIGTERM sent right after the listening line is handled: exit 0, not death by signal (20 starts)', async () => {
    const results = [];
    for (let i = 0; i < 20; i++) {
        const d = await startDaemon(NONE);
        try {
            const r = await d.stop();
            results.push(r.signal ? `signal ${r.signal}` : `code ${r.code}`);
        } finally {
            await d.stop({ signal: 'SIGKILL' });
        }
    }
    const bad = results.filter((r) => r !== 'code 0');
    assert.deepEqual(bad, [], `exits: ${results.join(', ')}`);
});

test('SIGTERM exits 0 even when a raw client never answers the close handshake', async (t) => {
    const d = await startDaemon([...NONE, '--shutdown-timeout', '1']);
    t.after(() => d.stop());
    const ws = await RawWs.connect(d.port, `/ws?user_id=${uid()}`);
    t.after(() => ws.destroy());
    await ws.next(byType('connected'));
    const started = Date.now();
    const r = await d.stop({ killAfterMs: 5000 });
    assert.deepEqual({ code: r.code, signal: r.signal, killed: r.killed }, { code: 0, signal: null, killed: false },
        d.logs.join('\n'));
    assert.ok(Date.now() - started < 2500, `exit within --shutdown-timeout 1 (+slack): ${Date.now() - started} ms`);
    const close = await ws.nextClose(1000);
    assert.equal(close.code, 1001);
});

test('SIGTERM after events were delivered: queued events arrive before the 1001 close', async (t) => {
    const d = await startDaemon([...NONE, '--shutdown-timeout', '2']);
    t.after(() => d.stop());
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    for (let i = 0; i < 20; i++) await publishOk(d.port, { user_id: user, type: 'burst', data: { i } });
    const r = await d.stop();
    assert.equal(r.code, 0);
    assert.equal((await c.waitClose()).code, 1001);
    const got = c.all.filter((m) => m.type === 'burst').map((m) => m.seq);
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i + 1), 'every accepted event was flushed');
    const types = c.all.filter((m) => m.type !== 'ping').map((m) => m.type);
    assert.equal(types.at(-1), 'closing', `closing is the last message: ${types.join(',')}`);
});

test('after SIGTERM the daemon stops accepting new connections', async (t) => {
    const d = await startDaemon([...NONE, '--shutdown-timeout', '2']);
    t.after(() => d.stop());
    await withTimeout(d.stop(), 6000, 'stop');
    await assert.rejects(connect(d.port, { user_id: uid() }, { timeoutMs: 1000 }));
});

test('SIGTERM with a client that stopped reading (big backlog) still exits 0 within --shutdown-timeout', async (t) => {
    const d = await startDaemon([...NONE, '--shutdown-timeout', '1', '--max-queue-bytes', '67108864']);
    t.after(() => d.stop());
    const user = uid();
    const ws = await RawWs.connect(d.port, `/ws?user_id=${user}`);
    t.after(() => ws.destroy());
    await ws.next(byType('connected'));
    ws.sock.pause();
    const pad = 'q'.repeat(256 * 1024);
    for (let i = 0; i < 40; i++) await publishOk(d.port, { user_id: user, type: 'big', data: { pad } });
    const started = Date.now();
    const r = await d.stop({ killAfterMs: 5000 });
    const elapsed = Date.now() - started;
    assert.deepEqual({ code: r.code, signal: r.signal, killed: r.killed }, { code: 0, signal: null, killed: false },
        d.logs.join('\n'));
    assert.ok(elapsed < 2500, `exit within --shutdown-timeout 1 (+slack): ${elapsed} ms`);
});
