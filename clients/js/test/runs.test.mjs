// Run views: events grouped by run_id into {status, agent, thinking, tools, result, error, ...},
// with a 'run' event on every change, against the real daemon (which enforces the lifecycle).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../agentcast.js';
import { WebSocket, daemonFor, publish, record, closeAfter, uid } from '../test-helpers.mjs';

test('a whole run: started, thinking x3, tool executing/completed, completed', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    const snapshots = [];
    c.on('run', (r) => snapshots.push({ status: r.status, events: r.events.length, tools: [...r.tools.values()].map((x) => x.status) }));
    await rec.connected();

    const base = { user_id: user, run_id: 'run-1', thread_id: 'thread-9' };
    await publish(d, { ...base, type: 'agent_started', data: { agent: 'researcher' } });
    await rec.until((r) => r.runs.length >= 1, 3000, 'run started');
    const view = c.runs.get('run-1');
    assert.equal(view.status, 'running');
    assert.equal(view.agent, 'researcher');
    assert.equal(view.thread_id, 'thread-9');
    assert.equal(view.startedAt, rec.events[0].timestamp);

    await publish(d, [
        { ...base, type: 'agent_thinking', data: { thought: 'Looking ' } },
        { ...base, type: 'agent_thinking', data: { thought: 'at the ' } },
        { ...base, type: 'agent_thinking', data: { thought: 'question' } },
        { ...base, type: 'tool_executing', data: { tool: 'search', tool_call_id: 'call-1', args: { q: 'agentcast' } } },
    ]);
    await rec.until((r) => r.runs.length >= 5, 3000, '5 run updates');
    assert.equal(view.thinking, 'Looking at the question');
    assert.deepEqual(view.thoughts, ['Looking ', 'at the ', 'question']);
    assert.deepEqual(view.tools.get('call-1'), { tool: 'search', tool_call_id: 'call-1', status: 'running', args: { q: 'agentcast' }, result: undefined });

    await publish(d, [
        { ...base, type: 'tool_completed', data: { tool: 'search', tool_call_id: 'call-1', result: { hits: 3 } } },
        { ...base, type: 'agent_completed', data: { result: 'The answer is 42' } },
    ]);
    await rec.until((r) => r.runs.length >= 7, 3000, '7 run updates');
    assert.equal(view.status, 'completed');
    assert.equal(view.result, 'The answer is 42');
    assert.equal(view.error, undefined);
    assert.deepEqual(view.tools.get('call-1').status, 'done');
    assert.deepEqual(view.tools.get('call-1').result, { hits: 3 });
    assert.deepEqual(view.events.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(view.events.map((e) => e.type), [
        'agent_started', 'agent_thinking', 'agent_thinking', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed',
    ]);
    assert.equal(view.updatedAt, rec.events[6].timestamp);
    assert.ok(rec.runs.every((r) => r === view), "'run' passes the same view, updated in place");
    assert.deepEqual(snapshots.map((s) => s.status), ['running', 'running', 'running', 'running', 'running', 'running', 'completed']);
    assert.deepEqual(snapshots.map((s) => s.tools.join()), ['', '', '', '', 'running', 'done', 'done']);
    assert.equal(c.runs.size, 1);
});

test('an errored run, a second run alongside, and events without run_id', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    await rec.connected();
    const a = { user_id: user, run_id: 'ra' };
    const b = { user_id: user, run_id: 'rb', thread_id: 'tb' };
    await publish(d, [
        { ...a, type: 'agent_started', data: { agent: 'coder' } },
        { ...b, type: 'agent_started', data: { agent: 'writer' } },
        { ...a, type: 'tool_executing', data: { tool: 'shell', tool_call_id: 'x1', arguments: 'ls' } },
        { user_id: user, type: 'heartbeat', data: {} },
        { ...a, type: 'agent_error', data: { error: 'tool crashed' } },
        { ...b, type: 'progress', data: { pct: 50 } },
    ]);
    await rec.until((r) => r.events.length >= 6, 3000, '6 events');
    assert.deepEqual([...c.runs.keys()], ['ra', 'rb']);
    const ra = c.runs.get('ra');
    assert.equal(ra.status, 'error');
    assert.equal(ra.error, 'tool crashed');
    assert.equal(ra.result, undefined);
    assert.equal(ra.agent, 'coder');
    assert.equal(ra.thread_id, null);
    assert.equal(ra.tools.get('x1').status, 'running', 'a tool the run never completed stays running');
    assert.equal(ra.tools.get('x1').args, 'ls');
    const rb = c.runs.get('rb');
    assert.equal(rb.status, 'running');
    assert.equal(rb.thread_id, 'tb');
    assert.deepEqual(rb.events.map((e) => e.type), ['agent_started', 'progress']);
    assert.equal(rec.runs.length, 5, "'run' for every event with a run_id, none for the heartbeat");
});

test('the gateway times out an open run: agent_error "run timed out" turns the view to error', async (t) => {
    const d = await daemonFor(t, ['--run-timeout', '0.3', '--cleanup-interval', '0.1']);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket }));
    const rec = record(c);
    await rec.connected();
    await publish(d, { user_id: user, run_id: 'slow', type: 'agent_started', data: { agent: 'a' } });
    await rec.until(() => c.runs.get('slow')?.status === 'error', 3000, 'run timed out');
    assert.equal(c.runs.get('slow').error, 'run timed out');
});

test('maxRuns: the oldest finished views are dropped first', async (t) => {
    const d = await daemonFor(t);
    const user = uid();
    const c = closeAfter(t, connect({ url: d.wsUrl, userId: user, WebSocket, maxRuns: 2 }));
    const rec = record(c);
    await rec.connected();
    await publish(d, [
        { user_id: user, run_id: 'r1', type: 'agent_started', data: { agent: 'a' } },
        { user_id: user, run_id: 'r2', type: 'agent_started', data: { agent: 'a' } },
        { user_id: user, run_id: 'r2', type: 'agent_completed', data: { result: 1 } },
        { user_id: user, run_id: 'r3', type: 'agent_started', data: { agent: 'a' } },
    ]);
    await rec.until((r) => r.events.length >= 4, 3000, '4 events');
    assert.deepEqual([...c.runs.keys()], ['r1', 'r3'], 'r2 (finished) went first, r1 (running) stays');
});
