// A connection that stops reading is closed with 4008 once its unsent backlog stayed over
// --max-queue-bytes for --slow-timeout, without holding up the user's other connections or
// other users, and it resumes from history with last_seq, with nothing missing and nothing
// twice. A pause shorter than --slow-timeout is forgiven: the connection catches up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, publishOk, byType, sleep, uid, waitFor, RawWs } from './helpers.mjs';
import { daemonOwning, stats } from './helpers3.mjs';

// A stalled connection is closed once its backlog stayed over the cap for --slow-timeout (1 s
// here), found by the next sweep (every 0.25 s here).
const ARGS = ['--auth', 'none', '--max-queue-bytes', '65536', '--slow-timeout', '1', '--cleanup-interval', '0.25'];
const N = 400; // events
const BATCH = 20; // events per publish
const PAD = 'x'.repeat(2000); // ~2 KB per event

/** Publishes N events of ~2 KB for `user` in arrays of BATCH; returns the seqs, in order. */
async function publishMany(port, user, type = 'chunk') {
    const seqs = [];
    for (let i = 0; i < N; i += BATCH) {
        const body = [];
        for (let j = i; j < Math.min(N, i + BATCH); j++) body.push({ user_id: user, type, data: { i: j, pad: PAD } });
        const r = await publishOk(port, body);
        assert.ok(Array.isArray(r) && r.length === body.length, `array reply: ${JSON.stringify(r).slice(0, 200)}`);
        for (const x of r) seqs.push(x.seq);
    }
    return seqs;
}

/** Collects every `type` event of a ws client until `n` arrived; returns their seqs. */
async function collect(c, n, type = 'chunk', timeoutMs = 8000) {
    const seqs = [];
    const deadline = Date.now() + timeoutMs;
    for (let k = 0; k < n; k++) {
        const m = await c.next(byType(type), Math.max(1, deadline - Date.now()), `${type} #${k + 1} of ${n}`);
        assert.equal(m.data.i, k, `event #${k + 1} carries i=${k} (order)`);
        seqs.push(m.seq);
    }
    return seqs;
}

const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/**
 * The common scenario: user A with a stalled raw connection and a normal one; publishes N
 * big events for A. Returns what the test needs.
 */
async function stallScenario(t) {
    const d = await daemonOwning(t, ARGS);
    const user = uid('slow');
    const stalled = d.own(await RawWs.connect(d.port, `/ws?user_id=${encodeURIComponent(user)}`));
    const hello = await stalled.next(byType('connected'), 2000, 'connected on the stalled connection');
    stalled.sock.pause(); // stops reading: the kernel buffers fill, then the daemon's queue
    const normal = d.own(await connect(d.port, { user_id: user }));
    const seqs = await publishMany(d.port, user);
    return { d, user, stalled, hello, normal, seqs };
}

test('with --max-queue-bytes 65536, a user\'s normal connection receives all 400 events in order while another of its connections is stalled', async (t) => {
    const { normal, seqs } = await stallScenario(t);
    assert.deepEqual(seqs, range(1, N), 'publish replies carry seqs 1..N');
    const got = await collect(normal, N);
    assert.deepEqual(got, range(1, N));
    await sleep(100);
    assert.equal(normal.all.filter(byType('chunk')).length, N, 'no event twice');
    assert.ok(normal.isOpen, 'the normal connection stays open');
});

test('a stalled connection, once it reads again, gets a contiguous prefix of the events then a close frame 4008', async (t) => {
    const { d, stalled } = await stallScenario(t);
    await waitFor(async () => (await stats(d.port)).closes.too_slow_4008 >= 1, 5000, 'closes.too_slow_4008 >= 1');
    stalled.sock.resume();
    const close = await stalled.nextClose(5000);
    assert.equal(close.code, 4008, `close frame: ${JSON.stringify(close)}`);
    const events = stalled.messages.filter(byType('chunk'));
    assert.deepEqual(
        events.map((m) => m.seq),
        range(1, events.length),
        'what the stalled connection received before the close is 1..k, in order, none twice',
    );
    assert.ok(events.length < N, `it cannot have received all ${N} events (got ${events.length})`);
    assert.deepEqual(stalled.protocolErrors, [], 'well-formed frames');
    assert.ok(await stalled.waitEnd(3000), 'the daemon closes the TCP connection after the close frame');
});

test('/v1/stats counts the 4008 close in closes.too_slow_4008', async (t) => {
    const { d, stalled } = await stallScenario(t);
    await waitFor(async () => (await stats(d.port)).closes.too_slow_4008 >= 1, 5000, 'closes.too_slow_4008 >= 1');
    stalled.sock.resume();
    await stalled.nextClose(5000);
    const s = await stats(d.port);
    assert.ok(s.closes.too_slow_4008 >= 1, `closes: ${JSON.stringify(s.closes)}`);
});

test('after a 4008, a connection resuming with last_seq = the last seq seen gets every later event once (recovered true)', async (t) => {
    const { d, user, stalled, hello } = await stallScenario(t);
    await waitFor(async () => (await stats(d.port)).closes.too_slow_4008 >= 1, 5000, 'closes.too_slow_4008 >= 1');
    stalled.sock.resume();
    const close = await stalled.nextClose(5000);
    assert.equal(close.code, 4008);
    const seen = stalled.messages.filter(byType('chunk')).map((m) => m.seq);
    const last = seen.length ? seen[seen.length - 1] : 0;
    const c = d.own(await connect(d.port, { user_id: user, last_seq: String(last), epoch: hello.data.epoch }));
    assert.equal(c.hello.data.recovered, true, JSON.stringify(c.hello));
    assert.equal(c.hello.data.last_seq, N);
    const got = [];
    for (let s = last + 1; s <= N; s++) {
        const m = await c.next(byType('chunk'), 3000, `replayed seq ${s}`);
        assert.equal(m.data.i, s - 1);
        got.push(m.seq);
    }
    assert.deepEqual(got, range(last + 1, N), 'none missing, in order');
    await sleep(150);
    assert.equal(c.all.filter(byType('chunk')).length, N - last, 'none twice');
    assert.equal(c.all.filter(byType('resync')).length, 0, 'no resync');
});

test('another user\'s connection is unaffected by a stalled connection being closed 4008', async (t) => {
    const d = await daemonOwning(t, ARGS);
    const slowUser = uid('slow');
    const other = uid('other');
    const stalled = d.own(await RawWs.connect(d.port, `/ws?user_id=${encodeURIComponent(slowUser)}`));
    await stalled.next(byType('connected'), 2000, 'connected on the stalled connection');
    stalled.sock.pause();
    const o = d.own(await connect(d.port, { user_id: other }));
    // Interleave: a batch for the slow user, then one for the other user.
    const otherSeqs = [];
    for (let i = 0; i < N; i += BATCH) {
        const mk = (u, type) =>
            Array.from({ length: BATCH }, (_, j) => ({ user_id: u, type, data: { i: i + j, pad: PAD } }));
        await publishOk(d.port, mk(slowUser, 'chunk'));
        const r = await publishOk(d.port, mk(other, 'other'));
        otherSeqs.push(...r.map((x) => x.seq));
        assert.ok(r.every((x) => x.delivered === 1), `other user's events delivered to its connection: ${JSON.stringify(r)}`);
    }
    assert.deepEqual(otherSeqs, range(1, N));
    await waitFor(async () => (await stats(d.port)).closes.too_slow_4008 >= 1, 5000, 'the stalled connection closed 4008');
    const got = await collect(o, N, 'other');
    assert.deepEqual(got, range(1, N));
    await sleep(100);
    assert.ok(o.isOpen, 'the other user\'s connection stays open');
    assert.equal(o.closeInfo, null);
    assert.equal(o.all.filter((m) => m.type === 'chunk' || m.user_id === slowUser).length, 0, 'no event of the slow user');
    stalled.sock.resume();
    assert.equal((await stalled.nextClose(5000)).code, 4008);
});

test('a connection that stops reading for less than --slow-timeout is not closed: it catches up with every event, in order', async (t) => {
    const d = await daemonOwning(t, ['--auth', 'none', '--max-queue-bytes', '65536', '--slow-timeout', '30', '--cleanup-interval', '0.25']);
    const user = uid('pause');
    const c = d.own(await RawWs.connect(d.port, `/ws?user_id=${encodeURIComponent(user)}`));
    await c.next(byType('connected'), 2000, 'connected');
    c.sock.pause();
    const seqs = await publishMany(d.port, user); // 400 x 2 KB: 12 x the cap
    assert.deepEqual(seqs, range(1, N));
    await sleep(300); // the sweep ran at least once meanwhile
    c.sock.resume();
    for (let k = 0; k < N; k++) {
        const m = await c.next(byType('chunk'), 5000, `chunk #${k + 1}`);
        assert.equal(m.seq, k + 1, 'in order, none missing');
    }
    await sleep(300);
    assert.equal(c.messages.filter(byType('chunk')).length, N, 'none twice');
    assert.equal(c.closeFrame ?? null, null, 'no close frame');
    assert.equal((await stats(d.port)).closes.too_slow_4008, 0, 'no 4008');
});
