// The config file (--config), the precedence command line > environment > file > defaults,
// --check-config (the effective configuration, secrets masked), and --log-format json.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { daemonFor, assertEvictsAtOne, connect, closeAfter, BIN, HOST, withTimeout, waitFor, uid } from './helpers.mjs';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agentcast-config-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let nfiles = 0;
function confFile(text) {
    const f = path.join(tmp, `c${++nfiles}.conf`);
    fs.writeFileSync(f, text);
    return f;
}

// Runs agentcastd to its exit with only the given AGENTCAST_* variables.
function runToExit(args, env = {}, ms = 20000) {
    const childEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTCAST_')) childEnv[k] = v;
    Object.assign(childEnv, env);
    const p = spawn(BIN, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (s) => (out += s));
    p.stderr.on('data', (s) => (err += s));
    const exited = new Promise((resolve) => p.on('close', (code, signal) => resolve({ code, signal, out, err })));
    return withTimeout(exited, ms, `exit of agentcastd ${args.join(' ')}`).finally(() => {
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
}

// The `name = value  # source` line of --check-config's output for `name`.
function setting(out, name) {
    const line = out.split('\n').find((l) => l.startsWith(`${name} = `));
    assert.ok(line, `no "${name} = " line in:\n${out}`);
    const m = /^(\S+) = (.*?)\s+# (.*)$/.exec(line);
    return { value: m[2], from: m[3] };
}

test('a config file sets flags: name = value lines, # comments, blank lines, quoted values', async (t) => {
    const f = confFile('# agentcastd\n\n   # indented comment\nauth = none\nmax-conns-per-user = "1"\n');
    const d = await daemonFor(t, ['--config', f]);
    await assertEvictsAtOne(t, d.port);
});

test('AGENTCAST_CONFIG names the file too', async (t) => {
    const f = confFile('auth=none\nmax-conns-per-user=1\n');
    const d = await daemonFor(t, [], { AGENTCAST_CONFIG: f });
    await assertEvictsAtOne(t, d.port);
});

test('the environment wins over the file when the daemon runs', async (t) => {
    const f = confFile('auth = none\nmax-conns-per-user = 5\n');
    const d = await daemonFor(t, ['--config', f], { AGENTCAST_MAX_CONNS_PER_USER: '1' });
    await assertEvictsAtOne(t, d.port);
});

test('precedence: command line > environment > file > defaults, as --check-config reports it', async () => {
    const f = confFile('auth = none\nmax-conns = 10\nhistory-size = 11\nrun-timeout = 12\n');
    const r = await runToExit(['--config', f, '--check-config', '--max-conns', '30'], {
        AGENTCAST_MAX_CONNS: '20',
        AGENTCAST_HISTORY_SIZE: '21',
    });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(setting(r.out, 'max-conns'), { value: '30', from: 'command line' });
    assert.deepEqual(setting(r.out, 'history-size'), { value: '21', from: 'environment AGENTCAST_HISTORY_SIZE' });
    assert.deepEqual(setting(r.out, 'run-timeout'), { value: '12', from: `${f}:4` });
    assert.deepEqual(setting(r.out, 'ping-interval'), { value: '30', from: 'default' });
    assert.match(r.out, new RegExp(`^# config file: ${f}$`, 'm'));
});

test('--config on the command line wins over AGENTCAST_CONFIG', async () => {
    const a = confFile('auth = none\nhistory-size = 7\n');
    const b = confFile('auth = none\nhistory-size = 8\n');
    const r = await runToExit(['--config', a, '--check-config'], { AGENTCAST_CONFIG: b });
    assert.equal(r.code, 0, r.err);
    assert.equal(setting(r.out, 'history-size').value, '7');
});

test('--check-config masks jwt-secret, api-key and redis-password from the file, env and command line', async () => {
    const f = confFile('jwt-secret = file-secret-123\n');
    const r = await runToExit(['--config', f, '--check-config', '--redis-password', 'cli-secret-456'], {
        AGENTCAST_API_KEY: 'env-secret-789',
    });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(setting(r.out, 'jwt-secret'), { value: '********', from: `${f}:1` });
    assert.deepEqual(setting(r.out, 'api-key'), { value: '********', from: 'environment AGENTCAST_API_KEY' });
    assert.deepEqual(setting(r.out, 'redis-password'), { value: '********', from: 'command line' });
    for (const s of ['file-secret-123', 'cli-secret-456', 'env-secret-789']) {
        assert.ok(!r.out.includes(s) && !r.err.includes(s), `${s} printed`);
    }
    assert.match(r.err, /configuration is valid/);
});

test('--check-config masks the credentials and query of every URL setting, and keeps the rest', async () => {
    const r = await runToExit([
        '--check-config', '--auth=proxy',
        '--auth-proxy-url', 'https://svc:proxy-pw-1@auth.example:8443/check?token=proxy-tok-2#frag-3',
        '--message-webhook', 'http://hook.example/in?key=hook-key-4',
        '--jwt-jwks-url', 'https://jwks-user-5@idp.example/.well-known/jwks.json',
    ]);
    assert.equal(r.code, 0, r.err);
    assert.equal(setting(r.out, 'auth-proxy-url').value, 'https://****@auth.example:8443/check?****');
    assert.equal(setting(r.out, 'message-webhook').value, 'http://hook.example/in?****');
    assert.equal(setting(r.out, 'jwt-jwks-url').value, 'https://****@idp.example/.well-known/jwks.json');
    for (const s of ['proxy-pw-1', 'proxy-tok-2', 'frag-3', 'hook-key-4', 'jwks-user-5', 'svc']) {
        assert.ok(!r.out.includes(s) && !r.err.includes(s), `${s} printed`);
    }
});

test('a secret in a config file that others may read draws a warning; mode 0600 does not', async () => {
    const f = confFile('auth = none\napi-key = k-123\n');
    fs.chmodSync(f, 0o644);
    const open = await runToExit(['--config', f, '--check-config']);
    assert.equal(open.code, 0, open.err);
    assert.match(open.err, /warning: .* holds api-key and other users may read it \(mode 644\)/);
    fs.chmodSync(f, 0o600);
    const closed = await runToExit(['--config', f, '--check-config']);
    assert.equal(closed.code, 0, closed.err);
    assert.doesNotMatch(closed.err, /warning/);
});

test('--check-config exits non-zero for an invalid configuration', async () => {
    const noKey = await runToExit(['--check-config', '--auth=none', '--tls-cert', path.join(tmp, 'missing.pem')]);
    assert.notEqual(noKey.code, 0, noKey.err);
    assert.match(noKey.err, /invalid configuration/);
    const noSecret = await runToExit(['--check-config']);
    assert.equal(noSecret.code, 2);
    assert.match(noSecret.err, /--auth=jwt needs --jwt-secret/);
    const badListen = await runToExit(['--check-config', '--auth=none', '--listen', 'nowhere']);
    assert.notEqual(badListen.code, 0, badListen.err);
});

test('config file errors name the file and the line, and the daemon does not start', async () => {
    const cases = [
        ['auth = none\nbogus = 1\n', /:2: unknown setting "bogus"/],
        ['auth = none\n\nmax-conns = many\n', /:3: invalid value "many" for --max-conns/],
        ['listen\n', /:1: expected "name = value", got "listen"/],
        ['auth = none\nauth = jwt\n', /:2: "auth" is already set on line 1/],
        ['help = 1\n', /:1: "help" is a command-line switch, not a setting/],
        ['config = /etc/other.conf\n', /:1: "config" is a command-line switch, not a setting/],
        ['api-key =\n', /:1: "api-key" needs a value/],
    ];
    for (const [text, re] of cases) {
        const f = confFile(text);
        const r = await runToExit(['--config', f, '--listen', `${HOST}:0`]);
        assert.equal(r.code, 2, `${JSON.stringify(text)}: ${r.err}`);
        assert.match(r.err, new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}${re.source}`));
        assert.doesNotMatch(r.err, /event=listening/);
    }
    const missing = await runToExit(['--config', path.join(tmp, 'nope.conf')]);
    assert.equal(missing.code, 2);
    assert.match(missing.err, /nope\.conf: No such file or directory/);
});

test('--help states the precedence and --config; --help-man documents every flag of --help', async () => {
    const help = await runToExit(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /Precedence: command line > environment > config file > defaults/);
    assert.match(help.out, /--config FILE/);
    const man = await runToExit(['--help-man']);
    assert.equal(man.code, 0);
    assert.match(man.out, /^\.TH AGENTCASTD 8 /m);
    const flags = [...help.out.matchAll(/^ {2}--([a-z][a-z0-9-]*)/gm)].map((m) => m[1]);
    assert.ok(flags.length > 30, flags.join(' '));
    for (const f of flags) assert.ok(man.out.includes(`\\fB\\-\\-${f.replace(/-/g, '\\-')}\\fR`), `man page lacks --${f}`);
});

test('--log-format json: every log line is one JSON object with ts, level and the fields', async (t) => {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTCAST_')) env[k] = v;
    const p = spawn(BIN, ['--listen', `${HOST}:0`, '--auth=none', '--log-format', 'json'], {
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
    });
    const exited = new Promise((resolve) => p.on('close', (code) => resolve(code)));
    t.after(() => p.kill('SIGKILL'));
    let text = '';
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (s) => (text += s));
    // Whole lines only: the last chunk may end inside a line.
    const lines = () => text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter(Boolean);
    const find = (event) => lines().map((l) => JSON.parse(l)).find((o) => o.event === event);
    const listening = await waitFor(() => find('listening'), 20000, 'the listening line');
    const port = Number(/:(\d+)$/.exec(listening.addr)[1]);
    const user = uid();
    const c = closeAfter(t, await connect(port, { user_id: user }));
    const open = await waitFor(() => find('ws_open'), 20000, 'the ws_open line');
    assert.equal(open.user, user);
    assert.equal(open.level, 'info');
    c.close();
    p.kill('SIGTERM');
    assert.equal(await withTimeout(exited, 10000, 'exit on SIGTERM'), 0);
    for (const l of lines()) {
        const o = JSON.parse(l);
        assert.match(o.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, l);
        assert.ok(['error', 'warn', 'info', 'debug'].includes(o.level), l);
        assert.equal(typeof o.event, 'string', l);
    }
    const warn = find('auth_none');
    assert.equal(warn.level, 'warn');
    assert.match(warn.reason, /^--auth=none: any client may claim any user_id/);
});

test('an unknown --log-format is refused', async () => {
    const r = await runToExit(['--auth=none', '--log-format', 'xml']);
    assert.equal(r.code, 2);
    assert.match(r.err, /invalid value "xml" for --log-format/);
});

test('README.md names every flag of --help (the flags table stays whole)', async () => {
    const help = await runToExit(['--help']);
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const flags = [...help.out.matchAll(/^ {2}--([a-z][a-z0-9-]*)/gm)].map((m) => m[1]);
    const missing = flags.filter((f) => !readme.includes(`\`--${f}`));
    assert.deepEqual(missing, [], `flags missing from README.md: ${missing.join(' ')}`);
});
