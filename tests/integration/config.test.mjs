// Flags and environment: --name=value and --name value forms, AGENTCAST_* variables, and
// refusing to start without what a mode requires.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { daemonFor, assertEvictsAtOne, BIN, HOST, withTimeout } from './helpers.mjs';

test('--name=value flags work (--auth=none --max-conns-per-user=1)', async (t) => {
    const d = await daemonFor(t, ['--auth=none', '--max-conns-per-user=1']);
    await assertEvictsAtOne(t, d.port);
});

test('flags are read from AGENTCAST_* environment variables', async (t) => {
    const d = await daemonFor(t, [], { AGENTCAST_AUTH: 'none', AGENTCAST_MAX_CONNS_PER_USER: '1' });
    await assertEvictsAtOne(t, d.port);
});

test('the listening log line names 127.0.0.1 and a real port', async (t) => {
    const d = await daemonFor(t, ['--auth', 'none']);
    const line = d.logs.find((l) => /event=listening/.test(l));
    assert.match(line, new RegExp(`addr=${HOST.replace(/\./g, '\\.')}:${d.port}\\b`));
    assert.ok(d.port > 0);
});

function runToExit(args, ms = 3000) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTCAST_')) env[k] = v;
    const p = spawn(BIN, ['--listen', `${HOST}:0`, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (s) => (err += s));
    const exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal, err })));
    return withTimeout(exited, ms, `exit of agentcastd ${args.join(' ')}`).finally(() => {
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
}

test('--auth jwt without --jwt-secret refuses to start (non-zero exit, no listening)', async () => {
    const r = await runToExit(['--auth', 'jwt']);
    assert.notEqual(r.code, 0, r.err);
    assert.doesNotMatch(r.err, /event=listening/);
});

test('the default auth mode is jwt: no flags and no secret refuses to start', async () => {
    const r = await runToExit([]);
    assert.notEqual(r.code, 0, r.err);
});
