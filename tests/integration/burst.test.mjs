// Bursts: a client that reads at full speed is never closed, whatever one publish or any
// pipelining puts on its connection at once; a stalled client beside it is closed 4008 after
// --slow-timeout (or at once when the events it needs leave the history), with bounded memory,
// and resumes with exactly what it missed. Also: a user's seq counter outlives its history.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { connect, publishOk, byType, sleep, uid, waitFor, RawWs } from './helpers.mjs';
import { daemonOwning, stats, agentSocket } from './helpers3.mjs';

const CAP = 65536;
const rssKiB = (pid) => Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const pad = (n) => 'x'.repeat(n);

/** Waits for `n` events of `type` on a WsClient or RawWs; asserts seqs first..first+n-1. */
async function expectSeqs(c, n, first = 1, type = 'chunk', timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    for (let k = 0; k < n; k++) {
        const m = await c.next(byType(type), Math.max(1, deadline - Date.now()), `${type} seq ${first + k}`);
        assert.equal(m.seq, first + k, 'in order, none missing');
    }
}

test('one publish of 10 x --max-queue-bytes reaches a full-speed client whole, and it is not closed', async (t) => {
    const d = await daemonOwning(t, ['--auth', 'none', '--max-queue-bytes', String(CAP)]);
    const user = uid('burst');
    const c = d.own(await connect(d.port, { user_id: user }));
    const N = 64; // 64 x 10 KB = 640 KiB in one body: 10 x the cap
    const body = Array.from({ length: N }, (_, i) => ({ user_id: user, type: 'chunk', data: { i, pad: pad(10240) } }));
    const r = await publishOk(d.port, body);
    assert.deepEqual(r.map((x) => x.seq), range(1, N));
    assert.ok(r.every((x) => x.delivered === 1), 'each event handed to the connection');
    await expectSeqs(c, N);
    await sleep(200);
    assert.ok(c.isOpen, `still open: ${JSON.stringify(c.closeInfo)}`);
    assert.equal(c.all.filter(byType('chunk')).length, N, 'none twice');
    assert.equal((await stats(d.port)).closes.too_slow_4008, 0);
});

test('1,000 pipelined publishes on /v1/agent reach a full-speed client whole, at the default cap and at 64 KiB', async (t) => {
    for (const cap of [null, CAP]) {
        const args = ['--auth', 'none', ...(cap ? ['--max-queue-bytes', String(cap)] : [])];
        const d = await daemonOwning(t, args);
        const user = uid('pipe');
        const c = d.own(await connect(d.port, { user_id: user }));
        const a = d.own(await agentSocket(d.port));
        const N = 1000;
        // 1,000 x 4 KB written without waiting: about 4 MiB at once, 4 x the default cap.
        for (let i = 0; i < N; i++) a.send({ user_id: user, type: 'chunk', data: { i, pad: pad(4096) } });
        for (let i = 0; i < N; i++) {
            const reply = await a.next(() => true, 15000, `reply ${i + 1}`);
            assert.equal(reply.seq, i + 1, `reply ${i + 1}: ${JSON.stringify(reply)}`);
        }
        await expectSeqs(c, N);
        await sleep(200);
        assert.ok(c.isOpen, `cap ${cap}: still open: ${JSON.stringify(c.closeInfo)}`);
        assert.equal((await stats(d.port)).closes.too_slow_4008, 0, `cap ${cap}: no 4008`);
    }
});

test('a stalled client beside a full-speed one: closed 4008 within --slow-timeout plus a sweep, memory bounded, the fast one gets all, the stalled one resumes exactly', async (t) => {
    const d = await daemonOwning(t, ['--auth', 'none', '--max-queue-bytes', String(CAP), '--slow-timeout', '1',
        '--cleanup-interval', '0.5']);
    const user = uid('stall');
    const stalled = d.own(await RawWs.connect(d.port, `/ws?user_id=${encodeURIComponent(user)}`));
    const hello = await stalled.next(byType('connected'), 2000, 'connected');
    stalled.sock.pause();
    const fast = d.own(await connect(d.port, { user_id: user }));
    const before = rssKiB(d.proc.pid);
    const N = 600; // 600 x 8 KB = 4.7 MiB in bodies of 10 x 8 KB
    const t0 = Date.now();
    for (let i = 0; i < N; i += 10) {
        const body = Array.from({ length: 10 }, (_, j) => ({ user_id: user, type: 'chunk', data: { i: i + j, pad: pad(8192) } }));
        await publishOk(d.port, body);
    }
    await expectSeqs(fast, N);
    await waitFor(async () => (await stats(d.port)).closes.too_slow_4008 >= 1, 5000, 'the stalled connection closed 4008');
    const tookMs = Date.now() - t0;
    assert.ok(tookMs < 1000 + 500 + 3000, `closed ${tookMs} ms after the burst began`);
    const after = rssKiB(d.proc.pid);
    console.log(`stall: RSS ${before} KiB -> ${after} KiB (history holds ~4.8 MiB)`);
    // The stalled connection held at most its cap: what grew is the history (~4.8 MiB).
    if (!process.env.AGENTCAST_SANITIZED) assert.ok(after - before < 12 * 1024, `RSS grew ${after - before} KiB`);
    stalled.sock.resume();
    const close = await stalled.nextClose(5000);
    assert.equal(close.code, 4008);
    const seen = stalled.messages.filter(byType('chunk')).map((m) => m.seq);
    assert.deepEqual(seen, range(1, seen.length), 'a prefix, in order');
    assert.ok(seen.length < N);
    const last = seen.length ? seen[seen.length - 1] : 0;
    const again = d.own(await connect(d.port, { user_id: user, last_seq: String(last), epoch: hello.data.epoch }));
    assert.equal(again.hello.data.recovered, true);
    await expectSeqs(again, N - last, last + 1);
    await sleep(200);
    assert.equal(again.all.filter(byType('chunk')).length, N - last, 'none twice');
    assert.ok(fast.isOpen, 'the fast one stays open');
});

test('a stalled client whose events leave the history is closed 4008 at once, holding no copy of the burst; it resumes with resync', async (t) => {
    const d = await daemonOwning(t, ['--auth', 'none', '--max-queue-bytes', String(CAP), '--slow-timeout', '60',
        '--history-size', '50']);
    const user = uid('gone');
    const stalled = d.own(await RawWs.connect(d.port, `/ws?user_id=${encodeURIComponent(user)}`));
    const hello = await stalled.next(byType('connected'), 2000, 'connected');
    stalled.sock.pause();
    const before = rssKiB(d.proc.pid);
    const N = 2000; // 2,000 x 10 KB = 20 MiB published; the history keeps 50 of them
    for (let i = 0; i < N; i += 20) {
        const body = Array.from({ length: 20 }, (_, j) => ({ user_id: user, type: 'chunk', data: { i: i + j, pad: pad(10240) } }));
        await publishOk(d.port, body);
    }
    await waitFor(async () => (await stats(d.port)).closes.too_slow_4008 >= 1, 3000, '4008 without waiting for --slow-timeout');
    const after = rssKiB(d.proc.pid);
    console.log(`history gone: RSS ${before} KiB -> ${after} KiB after 20 MiB published`);
    if (!process.env.AGENTCAST_SANITIZED) assert.ok(after - before < 8 * 1024, `RSS grew ${after - before} KiB`);
    stalled.sock.resume();
    assert.equal((await stalled.nextClose(5000)).code, 4008);
    const seen = stalled.messages.filter(byType('chunk')).map((m) => m.seq);
    assert.deepEqual(seen, range(1, seen.length), 'a prefix, in order');
    const last = seen.length ? seen[seen.length - 1] : 0;
    const again = d.own(await connect(d.port, { user_id: user, last_seq: String(last), epoch: hello.data.epoch }));
    assert.equal(again.hello.data.recovered, false, 'what it missed is partly gone: not recovered');
    const resync = await again.next(byType('resync'), 2000, 'resync');
    assert.equal(resync.data.from_seq, N - 50 + 1);
    await expectSeqs(again, 50, N - 50 + 1);
});

test('after an idle user\'s history expired, the next seq follows the last one (same epoch) and a last_seq=0 resume is not recovered', async (t) => {
    const d = await daemonOwning(t, ['--auth', 'none', '--history-ttl', '0.5', '--cleanup-interval', '0.2']);
    const user = uid('ttl');
    const first = await publishOk(d.port, [1, 2, 3].map((i) => ({ user_id: user, type: 'chunk', data: { i } })));
    assert.deepEqual(first.map((x) => x.seq), [1, 2, 3]);
    const c1 = d.own(await connect(d.port, { user_id: user, last_seq: '0' }));
    assert.equal(c1.hello.data.recovered, true, 'all three still retained');
    const epoch = c1.hello.data.epoch;
    c1.close();
    // Idle for 3 x --history-ttl, with sweeps every 0.2 s (a probe would make it active again).
    await sleep(1500);
    const next = await publishOk(d.port, { user_id: user, type: 'chunk', data: { i: 4 } });
    assert.equal(next.seq, 4, 'no seq reused within the epoch');
    const c2 = d.own(await connect(d.port, { user_id: user, last_seq: '0', epoch }));
    assert.equal(c2.hello.data.epoch, epoch, 'the same epoch');
    assert.equal(c2.hello.data.recovered, false, 'events 1..3 are gone: never recovered with a gap');
    const rs = await c2.next(byType('resync'), 2000, 'resync');
    assert.equal(rs.data.from_seq, 4);
    const ev = await c2.next(byType('chunk'), 2000, 'seq 4 replayed');
    assert.equal(ev.seq, 4);
});
