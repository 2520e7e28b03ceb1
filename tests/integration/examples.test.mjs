// The publisher examples (examples/python_agent.py, examples/node_agent.mjs) each stream a
// whole run that a user's connection receives in order; the curl line of the README works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { daemonFor, connect, closeAfter, uid } from './helpers.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ORDER = ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed'];

function run(cmd, args, env = {}) {
    return new Promise((resolve, reject) => {
        execFile(cmd, args, { cwd: REPO, timeout: 20000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
            if (err) reject(new Error(`${cmd} failed: ${err.message}\n${stderr}`));
            else resolve(stdout);
        });
    });
}

async function expectRun(c, runId, lastSeq) {
    const got = [];
    while (got.length === 0 || got[got.length - 1].type !== 'agent_completed') got.push(await c.next((m) => m.run_id === runId, 5000));
    const types = got.map((m) => m.type).filter((t, i, a) => t !== a[i - 1]);
    assert.deepEqual(types, ORDER);
    for (let i = 1; i < got.length; i++) assert.equal(got[i].seq, got[i - 1].seq + 1);
    assert.equal(got[got.length - 1].seq, lastSeq);
}

test('examples/python_agent.py (urllib, batched POST /v1/publish) streams a whole run', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--api-key', 'k']);
    const user = uid('py');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const out = JSON.parse(await run('python3', ['examples/python_agent.py', '--url', `http://127.0.0.1:${d.port}`, '--user', user, '--api-key', 'k']));
    await expectRun(c, out.run_id, out.last_seq);
});

test('examples/node_agent.mjs (the /v1/agent socket) streams a whole run', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--api-key', 'k']);
    const user = uid('node');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const out = JSON.parse(await run('node', ['examples/node_agent.mjs', '--url', `ws://127.0.0.1:${d.port}`, '--user', user, '--api-key', 'k'],
        { NODE_PATH: path.join(REPO, 'tests', 'node_modules') }));
    await expectRun(c, out.run_id, out.last_seq);
});

test('the README curl line publishes', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const c = closeAfter(t, await connect(d.port, { user_id: 'u1' }));
    const out = await run('curl', ['-s', `http://127.0.0.1:${d.port}/v1/publish`, '-d', '{"user_id":"u1","type":"agent_started","run_id":"r1","data":{"agent":"researcher"}}']);
    assert.deepEqual(JSON.parse(out), { seq: 1, delivered: 1 });
    assert.equal((await c.nextEvent()).type, 'agent_started');
});
