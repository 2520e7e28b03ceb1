// /v1/stats counters, /healthz and /metrics.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonFor, connect, closeAfter, publishOk, request, waitFor, uid } from './helpers.mjs';

const NONE = ['--auth', 'none'];

test('/healthz is 200 {"status":"ok","broker":"up"}', async (t) => {
    const d = await daemonFor(t, NONE);
    const r = await request(d.port, '/healthz');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { status: 'ok', broker: 'up' });
});

test('/v1/stats on a fresh daemon counts nothing', async (t) => {
    const d = await daemonFor(t, NONE);
    const r = await request(d.port, '/v1/stats');
    assert.equal(r.status, 200, r.text);
    const s = r.json;
    assert.equal(s.total_users, 0);
    assert.equal(s.total_connections, 0);
    assert.equal(s.events_total, 0);
    assert.equal(s.deliveries_total, 0);
    assert.deepEqual(s.events_by_type, {
        agent_started: 0,
        agent_thinking: 0,
        tool_executing: 0,
        tool_completed: 0,
        agent_completed: 0,
        agent_error: 0,
        user_message: 0,
        custom: 0,
    });
    assert.equal(typeof s.uptime_s, 'number');
    assert.ok(s.uptime_s >= 0);
    assert.equal(typeof s.active_emitters, 'number');
});

test('/v1/stats counts users, connections, events by type (custom together) and deliveries', async (t) => {
    const d = await daemonFor(t, NONE);
    const alice = uid('alice');
    const bob = uid('bob');
    const a1 = closeAfter(t, await connect(d.port, { user_id: alice }));
    closeAfter(t, await connect(d.port, { user_id: alice }));
    closeAfter(t, await connect(d.port, { user_id: bob }));
    const sent = [
        { user_id: alice, type: 'agent_started', data: { agent: 'a' } },
        { user_id: alice, type: 'agent_thinking', data: { thought: 't' } },
        { user_id: alice, type: 'agent_thinking', data: { thought: 't2' } },
        { user_id: alice, type: 'tool_executing', data: { tool: 'x', tool_call_id: 'c1' } },
        { user_id: alice, type: 'tool_completed', data: { tool: 'x', tool_call_id: 'c1', result: 1 } },
        { user_id: alice, type: 'agent_completed', data: { result: 'r' } },
        { user_id: bob, type: 'agent_error', data: { error: 'e' } },
        { user_id: bob, type: 'my.custom', data: {} },
        { user_id: alice, type: 'another-custom', data: {} },
        { user_id: uid('nobody'), type: 'third_custom', data: {} },
    ];
    let delivered = 0;
    for (const e of sent) delivered += (await publishOk(d.port, e)).delivered;
    assert.equal(delivered, 2 * 7 + 1 * 2 + 0);
    for (let i = 0; i < 7; i++) await a1.nextEvent();

    const r = await request(d.port, '/v1/stats');
    assert.equal(r.status, 200, r.text);
    const s = r.json;
    assert.equal(s.total_connections, 3);
    assert.equal(s.total_users, 2, 'users with open connections');
    assert.deepEqual(s.events_by_type, {
        agent_started: 1,
        agent_thinking: 2,
        tool_executing: 1,
        tool_completed: 1,
        agent_completed: 1,
        agent_error: 1,
        user_message: 0,
        custom: 3,
    });
    assert.equal(s.events_total, sent.length);
    assert.equal(s.deliveries_total, delivered);
});

test('/v1/stats total_connections and total_users drop when clients disconnect', async (t) => {
    const d = await daemonFor(t, NONE);
    const u = uid();
    const c1 = await connect(d.port, { user_id: u });
    const c2 = await connect(d.port, { user_id: u });
    const before = (await request(d.port, '/v1/stats')).json;
    assert.deepEqual([before.total_users, before.total_connections], [1, 2]);
    await c1.close();
    await waitFor(async () => (await request(d.port, '/v1/stats')).json.total_connections === 1, 2000, 'total_connections 1');
    assert.equal((await request(d.port, '/v1/stats')).json.total_users, 1);
    await c2.close();
    await waitFor(async () => (await request(d.port, '/v1/stats')).json.total_connections === 0, 2000, 'total_connections 0');
    assert.equal((await request(d.port, '/v1/stats')).json.total_users, 0);
});

test('rejected publishes are not counted as events', async (t) => {
    const d = await daemonFor(t, NONE);
    await publishOk(d.port, { user_id: uid(), type: 'agent_started', data: { agent: 'a' } });
    const bad = await request(d.port, '/v1/publish', {
        method: 'POST',
        body: JSON.stringify({ user_id: uid(), type: 'agent_started', data: {} }),
    });
    assert.equal(bad.status, 400);
    const s = (await request(d.port, '/v1/stats')).json;
    assert.equal(s.events_by_type.agent_started, 1);
    assert.equal(s.events_total, 1);
});

test('/metrics is Prometheus text', async (t) => {
    const d = await daemonFor(t, NONE);
    await publishOk(d.port, { user_id: uid(), type: 'agent_started', data: { agent: 'a' } });
    const r = await request(d.port, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain/);
    const lines = r.text.split('\n').filter((l) => l && !l.startsWith('#'));
    assert.ok(lines.length > 0, 'has samples');
    for (const l of lines) assert.match(l, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)( -?\d+)?$/, l);
});
