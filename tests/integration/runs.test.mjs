// Runs (the agent bridge): the lifecycle rules and their exact 409 reasons, arrays checked
// in order and all or nothing, the gateway's "run timed out", GET /v1/runs/{run_id} and
// open_runs in /v1/stats. A refused event must leave no trace: no seq, no delivery.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
    daemonFor,
    connect,
    closeAfter,
    publish,
    publishOk,
    assertJsonError,
    byType,
    notPing,
    sleep,
    uid,
    TS_RE,
} from './helpers.mjs';
import { getRun, stats, dataFor } from './helpers3.mjs';

const NONE = ['--auth', 'none'];
const TIMEOUT_ARGS = [...NONE, '--run-timeout', '0.4', '--cleanup-interval', '0.1'];
const CUSTOM = 'ui.progress';


/** An event of `type` for `user` in run `run` (no run_id when run is null). */
function ev(user, type, run, { call = 'c1', thread } = {}) {
    const e = { user_id: user, type, data: dataFor(type, call) };
    if (run !== null) e.run_id = run;
    if (thread !== undefined) e.thread_id = thread;
    return e;
}

/** A daemon, a user and one live connection of that user. */
async function setup(t, args = NONE) {
    const d = await daemonFor(t, args);
    const user = uid('runner');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    return { d, user, c };
}

/** Publishes `body` and asserts 409 with exactly `error` (and `index` when given). */
async function expect409(port, body, error, index) {
    const r = await publish(port, body);
    assertJsonError(assert, r, 409, error);
    if (index !== undefined) assert.equal(r.json.index, index, `index in ${r.text}`);
    return r;
}

/**
 * Asserts that the refused events left no trace: the next event for `user` gets seq
 * accepted.length + 1, and connection `c` received exactly the accepted events then it.
 */
async function assertNoTrace(port, user, c, accepted) {
    const r = await publishOk(port, { user_id: user, type: 'probe', data: {} });
    assert.equal(r.seq, accepted.length + 1, 'the refused event consumed no seq');
    await c.next(byType('probe'), 2000, 'the probe event');
    const got = c.all.filter((m) => m.seq !== undefined).map((m) => [m.seq, m.type]);
    const want = [...accepted, 'probe'].map((type, i) => [i + 1, type]);
    assert.deepEqual(got, want, 'the connection received the accepted events only');
}

// ---- run already open / run closed ---------------------------------------------------------

test('agent_started for a run already open: 409 "run_id: run already open", no seq used, delivered to nobody', async (t) => {
    const { d, user, c } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await expect409(d.port, ev(user, 'agent_started', 'r1'), 'run_id: run already open');
    await assertNoTrace(d.port, user, c, ['agent_started']);
});

for (const closer of ['agent_completed', 'agent_error']) {
    for (const type of ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed', 'agent_error', CUSTOM]) {
        test(`${type} after ${closer} closed the run: 409 "run_id: run closed", no seq used, delivered to nobody`, async (t) => {
            const { d, user, c } = await setup(t);
            await publishOk(d.port, ev(user, 'agent_started', 'r1'));
            await publishOk(d.port, ev(user, closer, 'r1'));
            await expect409(d.port, ev(user, type, 'r1'), 'run_id: run closed');
            await assertNoTrace(d.port, user, c, ['agent_started', closer]);
        });
    }
}

// ---- run not open --------------------------------------------------------------------------

for (const type of ['agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed', 'agent_error', CUSTOM]) {
    test(`${type} with the run_id of a run never started: 409 "run_id: run not open", no seq used, delivered to nobody`, async (t) => {
        const { d, user, c } = await setup(t);
        await expect409(d.port, ev(user, type, 'never-started'), 'run_id: run not open');
        await assertNoTrace(d.port, user, c, []);
    });
}

// ---- another user's run --------------------------------------------------------------------

for (const type of ['agent_started', 'agent_thinking', 'agent_completed']) {
    test(`${type} from another user for an open run: 409 "run_id: belongs to another user", delivered to nobody, the run stays open`, async (t) => {
        const { d, user, c } = await setup(t);
        const other = uid('intruder');
        const oc = closeAfter(t, await connect(d.port, { user_id: other }));
        await publishOk(d.port, ev(user, 'agent_started', 'r1'));
        await expect409(d.port, ev(other, type, 'r1'), 'run_id: belongs to another user');
        await assertNoTrace(d.port, other, oc, []);
        await assertNoTrace(d.port, user, c, ['agent_started']);
        const run = await getRun(d.port, 'r1');
        assert.equal(run.status, 200, run.text);
        assert.equal(run.json.state, 'open');
        assert.equal(run.json.user_id, user);
    });
}

test('a retried agent_started with the same idempotency_key answers duplicate (first seq), not 409', async (t) => {
    const { d, user, c } = await setup(t);
    const e = { ...ev(user, 'agent_started', 'r1'), idempotency_key: 'start-r1' };
    assert.deepEqual(await publishOk(d.port, e), { seq: 1, delivered: 1 });
    assert.deepEqual(await publishOk(d.port, e), { seq: 1, delivered: 0, duplicate: true });
    await assertNoTrace(d.port, user, c, ['agent_started']);
});

// ---- tool calls ----------------------------------------------------------------------------

test('tool_completed for a tool_call_id never executing: 409 "data.tool_call_id: not executing in this run", no seq used, delivered to nobody', async (t) => {
    const { d, user, c } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' }));
    await expect409(d.port, ev(user, 'tool_completed', 'r1', { call: 'c2' }), 'data.tool_call_id: not executing in this run');
    await assertNoTrace(d.port, user, c, ['agent_started', 'tool_executing']);
});

test('tool_completed twice for the same tool_call_id: the second is 409 "data.tool_call_id: not executing in this run"', async (t) => {
    const { d, user, c } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' }));
    await publishOk(d.port, ev(user, 'tool_completed', 'r1', { call: 'c1' }));
    await expect409(d.port, ev(user, 'tool_completed', 'r1', { call: 'c1' }), 'data.tool_call_id: not executing in this run');
    await assertNoTrace(d.port, user, c, ['agent_started', 'tool_executing', 'tool_completed']);
});

test('tool_executing for a tool_call_id already executing: 409 "data.tool_call_id: already executing in this run", no seq used, delivered to nobody', async (t) => {
    const { d, user, c } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' }));
    await expect409(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' }), 'data.tool_call_id: already executing in this run');
    await assertNoTrace(d.port, user, c, ['agent_started', 'tool_executing']);
});

test('the same tool_call_id in two different runs is two calls: both execute and complete', async (t) => {
    const { d, user } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'agent_started', 'r2'));
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' }));
    await publishOk(d.port, ev(user, 'tool_executing', 'r2', { call: 'c1' }));
    await publishOk(d.port, ev(user, 'tool_completed', 'r1', { call: 'c1' }));
    await publishOk(d.port, ev(user, 'tool_completed', 'r2', { call: 'c1' }));
});

// ---- arrays --------------------------------------------------------------------------------

test('a full valid run in one array is accepted: consecutive seqs, delivered in order, the run closed', async (t) => {
    const { d, user, c } = await setup(t);
    const body = [
        ev(user, 'agent_started', 'r1', { thread: 't1' }),
        ev(user, 'agent_thinking', 'r1', { thread: 't1' }),
        ev(user, 'tool_executing', 'r1', { call: 'c1', thread: 't1' }),
        ev(user, 'tool_executing', 'r1', { call: 'c2', thread: 't1' }),
        ev(user, 'tool_completed', 'r1', { call: 'c1', thread: 't1' }),
        ev(user, CUSTOM, 'r1', { thread: 't1' }),
        ev(user, 'tool_completed', 'r1', { call: 'c2', thread: 't1' }),
        ev(user, 'agent_completed', 'r1', { thread: 't1' }),
    ];
    const r = await publishOk(d.port, body);
    assert.deepEqual(r, body.map((_, i) => ({ seq: i + 1, delivered: 1 })));
    for (const [i, e] of body.entries()) {
        const m = await c.nextEvent();
        assert.deepEqual([m.type, m.seq, m.run_id, m.thread_id, m.data], [e.type, i + 1, 'r1', 't1', e.data]);
    }
    await expect409(d.port, ev(user, 'agent_thinking', 'r1'), 'run_id: run closed');
});

test('an array whose 3rd item breaks the lifecycle is rejected whole with "index":2; nothing delivered, no seq used, no run opened', async (t) => {
    const { d, user, c } = await setup(t);
    const body = [
        ev(user, 'agent_started', 'r1'),
        ev(user, 'agent_thinking', 'r1'),
        ev(user, 'tool_completed', 'r1', { call: 'c9' }),
        ev(user, 'agent_completed', 'r1'),
    ];
    await expect409(d.port, body, 'data.tool_call_id: not executing in this run', 2);
    await assertNoTrace(d.port, user, c, []);
    const run = await getRun(d.port, 'r1');
    assertJsonError(assert, run, 404, 'run_id: unknown run');
    await publishOk(d.port, ev(user, 'agent_started', 'r1')); // the run was never opened
});

test('an array is checked in order: agent_started twice for one run in the same array is 409 "run_id: run already open" at index 1', async (t) => {
    const { d, user, c } = await setup(t);
    const body = [ev(user, 'agent_started', 'r1'), ev(user, 'agent_started', 'r1')];
    await expect409(d.port, body, 'run_id: run already open', 1);
    await assertNoTrace(d.port, user, c, []);
});

test('an array is checked in order: tool_completed before its tool_executing in the same array is 409 at that index', async (t) => {
    const { d, user, c } = await setup(t);
    const body = [
        ev(user, 'agent_started', 'r1'),
        ev(user, 'tool_completed', 'r1', { call: 'c1' }),
        ev(user, 'tool_executing', 'r1', { call: 'c1' }),
    ];
    await expect409(d.port, body, 'data.tool_call_id: not executing in this run', 1);
    await assertNoTrace(d.port, user, c, []);
});

// ---- events without run_id -----------------------------------------------------------------

test('events without run_id are not checked: tool_completed, agent_completed, agent_error and agent_started twice are all accepted', async (t) => {
    const { d, user, c } = await setup(t);
    const types = ['tool_completed', 'agent_completed', 'agent_error', 'agent_thinking', 'agent_started', 'agent_started', CUSTOM];
    for (const [i, type] of types.entries()) {
        const r = await publishOk(d.port, ev(user, type, null));
        assert.equal(r.seq, i + 1, type);
    }
    for (const type of types) assert.equal((await c.nextEvent()).type, type);
    const s = await stats(d.port);
    assert.equal(s.open_runs, 0, 'no run opened by events without run_id');
});

// ---- run timeout ---------------------------------------------------------------------------

test('--run-timeout 0.4: an open run with no event gets agent_error "run timed out" (timeout_s 0.4, its run_id and thread_id) on every connection with the next seq', async (t) => {
    const { d, user, c } = await setup(t, TIMEOUT_ARGS);
    const c2 = closeAfter(t, await connect(d.port, { user_id: user }));
    await publishOk(d.port, ev(user, 'agent_started', 'r1', { thread: 't1' }));
    const last = await publishOk(d.port, ev(user, 'agent_thinking', 'r1', { thread: 't1' }));
    const lastAt = Date.now();
    assert.equal(last.seq, 2);
    const e = await c.next(byType('agent_error'), 3000, 'the gateway\'s agent_error');
    const waited = Date.now() - lastAt;
    assert.ok(waited >= 350, `timed out ${waited} ms after the last event, not before --run-timeout 0.4`);
    assert.match(String(e.timestamp), TS_RE);
    const { timestamp, ...rest } = e;
    assert.deepEqual(rest, {
        type: 'agent_error',
        seq: 3,
        user_id: user,
        run_id: 'r1',
        thread_id: 't1',
        data: { error: 'run timed out', timeout_s: 0.4 },
    });
    assert.deepEqual(await c2.next(byType('agent_error'), 2000, 'agent_error on the second connection'), e);
    assert.deepEqual(c.all.filter(notPing).map((m) => m.type), ['connected', 'agent_started', 'agent_thinking', 'agent_error']);
});

test('after the gateway timed a run out, the run is closed: 409 "run_id: run closed", and the next event gets the next seq', async (t) => {
    const { d, user, c } = await setup(t, TIMEOUT_ARGS);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await c.next(byType('agent_error'), 3000, 'the gateway\'s agent_error');
    await expect409(d.port, ev(user, 'agent_thinking', 'r1'), 'run_id: run closed');
    await expect409(d.port, ev(user, 'agent_started', 'r1'), 'run_id: run closed');
    await assertNoTrace(d.port, user, c, ['agent_started', 'agent_error']);
});

test('--run-timeout counts from the run\'s last event: a run with an event every 0.15 s stays open, then times out once they stop', async (t) => {
    const { d, user, c } = await setup(t, TIMEOUT_ARGS);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    for (let i = 0; i < 7; i++) {
        await sleep(150);
        await publishOk(d.port, ev(user, 'agent_thinking', 'r1'));
    }
    assert.equal(c.all.filter(byType('agent_error')).length, 0, `no timeout while events keep coming: ${JSON.stringify(c.all)}`);
    const e = await c.next(byType('agent_error'), 3000, 'the gateway\'s agent_error');
    assert.equal(e.seq, 9);
    assert.deepEqual(e.data, { error: 'run timed out', timeout_s: 0.4 });
});

test('GET /v1/runs/{id} of a run timed out by the gateway: closed, closed_by "timeout", last_seq the agent_error\'s seq', async (t) => {
    const { d, user, c } = await setup(t, TIMEOUT_ARGS);
    await publishOk(d.port, ev(user, 'agent_started', 'r1', { thread: 't1' }));
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1', thread: 't1' }));
    const e = await c.next(byType('agent_error'), 3000, 'the gateway\'s agent_error');
    const r = await getRun(d.port, 'r1');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'closed');
    assert.equal(r.json.closed_by, 'timeout');
    assert.equal(r.json.run_id, 'r1');
    assert.equal(r.json.user_id, user);
    assert.equal(r.json.thread_id, 't1');
    assert.equal(r.json.last_seq, e.seq);
    assert.equal(r.json.events, 3);
});

test('the gateway\'s agent_error is retained like any event: a user with no connection gets it replayed on resume', async (t) => {
    const d = await daemonFor(t, TIMEOUT_ARGS);
    const user = uid('away');
    await publishOk(d.port, ev(user, 'agent_started', 'r1', { thread: 't1' }));
    await sleep(800);
    const c = closeAfter(t, await connect(d.port, { user_id: user, last_seq: '1' }));
    assert.equal(c.hello.data.recovered, true, JSON.stringify(c.hello));
    assert.equal(c.hello.data.last_seq, 2);
    const e = await c.nextEvent();
    assert.deepEqual(
        [e.type, e.seq, e.run_id, e.thread_id, e.data],
        ['agent_error', 2, 'r1', 't1', { error: 'run timed out', timeout_s: 0.4 }],
    );
});

test('/v1/stats open_runs drops when the gateway times a run out', async (t) => {
    const { d, user, c } = await setup(t, TIMEOUT_ARGS);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    assert.equal((await stats(d.port)).open_runs, 1);
    await c.next(byType('agent_error'), 3000, 'the gateway\'s agent_error');
    assert.equal((await stats(d.port)).open_runs, 0);
});

// ---- GET /v1/runs/{run_id} -----------------------------------------------------------------

const RUN_KEYS = ['run_id', 'user_id', 'thread_id', 'state', 'tools_executing', 'last_seq', 'events', 'started_at', 'updated_at', 'closed_by'];

test('GET /v1/runs/{id} of an open run: state open, the executing tool_call_ids, last_seq, events, timestamps, closed_by null', async (t) => {
    const { d, user, c } = await setup(t);
    await publishOk(d.port, { user_id: user, type: 'note', data: {} }); // seq 1, no run
    await publishOk(d.port, ev(user, 'agent_started', 'r1', { thread: 't1' })); // 2
    await publishOk(d.port, ev(user, 'agent_thinking', 'r1', { thread: 't1' })); // 3
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c0' })); // 4
    await publishOk(d.port, ev(user, 'tool_completed', 'r1', { call: 'c0' })); // 5
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' })); // 6
    await publishOk(d.port, { user_id: user, type: 'note', data: {} }); // 7, no run
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c2' })); // 8
    const started = await c.next(byType('agent_started'), 2000, 'agent_started');
    const r = await getRun(d.port, 'r1');
    assert.equal(r.status, 200, r.text);
    for (const k of RUN_KEYS) assert.ok(k in r.json, `key ${k} in ${r.text}`);
    assert.equal(r.json.run_id, 'r1');
    assert.equal(r.json.user_id, user);
    assert.equal(r.json.thread_id, 't1');
    assert.equal(r.json.state, 'open');
    assert.deepEqual([...r.json.tools_executing].sort(), ['c1', 'c2']);
    assert.equal(r.json.last_seq, 8);
    assert.equal(r.json.events, 6);
    assert.equal(r.json.closed_by, null);
    assert.match(String(r.json.started_at), TS_RE);
    assert.match(String(r.json.updated_at), TS_RE);
    assert.equal(r.json.started_at, started.timestamp, 'started_at is when agent_started was accepted');
    assert.ok(r.json.updated_at >= r.json.started_at, `updated_at ${r.json.updated_at} >= started_at ${r.json.started_at}`);
});

test('GET /v1/runs/{id} of a run closed by agent_completed: state closed, closed_by "agent_completed", no tools executing', async (t) => {
    const { d, user } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'tool_executing', 'r1', { call: 'c1' }));
    await publishOk(d.port, ev(user, 'tool_completed', 'r1', { call: 'c1' }));
    await publishOk(d.port, ev(user, 'agent_completed', 'r1'));
    const r = await getRun(d.port, 'r1');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'closed');
    assert.equal(r.json.closed_by, 'agent_completed');
    assert.deepEqual(r.json.tools_executing, []);
    assert.equal(r.json.last_seq, 4);
    assert.equal(r.json.events, 4);
});

test('GET /v1/runs/{id} of a run closed by agent_error: state closed, closed_by "agent_error"', async (t) => {
    const { d, user } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'agent_error', 'r1'));
    const r = await getRun(d.port, 'r1');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'closed');
    assert.equal(r.json.closed_by, 'agent_error');
    assert.equal(r.json.last_seq, 2);
    assert.equal(r.json.events, 2);
});

test('GET /v1/runs/{id} of an unknown run: 404 "run_id: unknown run"', async (t) => {
    const d = await daemonFor(t, NONE);
    const r = await getRun(d.port, 'no-such-run');
    assertJsonError(assert, r, 404, 'run_id: unknown run');
});

test('GET /v1/runs/{id} does not count refused events: a 409 changes neither events nor last_seq', async (t) => {
    const { d, user } = await setup(t);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await expect409(d.port, ev(user, 'tool_completed', 'r1', { call: 'zz' }), 'data.tool_call_id: not executing in this run');
    const r = await getRun(d.port, 'r1');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.events, 1);
    assert.equal(r.json.last_seq, 1);
    assert.deepEqual(r.json.tools_executing, []);
});

test('a closed run is remembered for --history-ttl, then forgotten (404)', async (t) => {
    const d = await daemonFor(t, [...NONE, '--history-ttl', '0.3', '--cleanup-interval', '0.1']);
    const user = uid();
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    await publishOk(d.port, ev(user, 'agent_completed', 'r1'));
    assert.equal((await getRun(d.port, 'r1')).json?.state, 'closed');
    await expect409(d.port, ev(user, 'agent_started', 'r1'), 'run_id: run closed');
    await sleep(800);
    assertJsonError(assert, await getRun(d.port, 'r1'), 404, 'run_id: unknown run');
});

// ---- /v1/stats open_runs -------------------------------------------------------------------

test('/v1/stats open_runs goes up with agent_started and down with agent_completed / agent_error; a 409 changes nothing', async (t) => {
    const { d, user } = await setup(t);
    assert.equal((await stats(d.port)).open_runs, 0);
    await publishOk(d.port, ev(user, 'agent_started', 'r1'));
    assert.equal((await stats(d.port)).open_runs, 1);
    await publishOk(d.port, ev(user, 'agent_started', 'r2'));
    assert.equal((await stats(d.port)).open_runs, 2);
    await expect409(d.port, ev(user, 'agent_started', 'r2'), 'run_id: run already open');
    assert.equal((await stats(d.port)).open_runs, 2);
    await publishOk(d.port, ev(user, 'agent_completed', 'r1'));
    assert.equal((await stats(d.port)).open_runs, 1);
    await publishOk(d.port, ev(user, 'agent_error', 'r2'));
    assert.equal((await stats(d.port)).open_runs, 0);
});

// ---- API key -------------------------------------------------------------------------------

test('with --api-key, GET /v1/runs/{id} without the key is 401 "api key required"', async (t) => {
    const d = await daemonFor(t, [...NONE, '--api-key', 'k']);
    const r = await getRun(d.port, 'r1');
    assertJsonError(assert, r, 401, 'api key required');
});

test('with --api-key, GET /v1/runs/{id} with a wrong key is 401 "invalid api key"', async (t) => {
    const d = await daemonFor(t, [...NONE, '--api-key', 'k']);
    const r = await getRun(d.port, 'r1', { key: 'nope' });
    assertJsonError(assert, r, 401, 'invalid api key');
});

test('with --api-key, GET /v1/runs/{id} with the key answers the run', async (t) => {
    const d = await daemonFor(t, [...NONE, '--api-key', 'k']);
    const user = uid();
    assertJsonError(assert, await getRun(d.port, 'r1', { key: 'k' }), 404, 'run_id: unknown run');
    await publishOk(d.port, ev(user, 'agent_started', 'r1'), { key: 'k' });
    const r = await getRun(d.port, 'r1', { key: 'k' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'open');
});
