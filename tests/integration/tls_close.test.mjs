// TLS: every response reaches the client before the connection closes (Connection: close,
// HTTP/1.0, errors that close, the WebSocket close handshake): the encrypted bytes are
// flushed, then close_notify (SSL_shutdown), then the TCP close. Checked with several real
// clients: curl, Python's urllib and ssl modules (and the Python example publisher over
// https), Node's https with and without a keep-alive agent, and openssl s_client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import WebSocket from 'ws';
import { startDaemon, HOST, WsClient, withTimeout, uid } from './helpers.mjs';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
let dir, cert, key, d;

before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentcast-tlsclose-'));
    cert = path.join(dir, 'cert.pem');
    key = path.join(dir, 'key.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
        '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1']);
    d = await startDaemon(['--auth=none', '--tls-cert', cert, '--tls-key', key, '--api-key', 'k']);
});

after(async () => {
    if (d) await d.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs a command; resolves {code, stdout, stderr} (never rejects on a non-zero exit). */
function run(cmd, args, { input, env, timeoutMs = 15000 } = {}) {
    return new Promise((resolve, reject) => {
        const p = execFile(cmd, args, { timeout: timeoutMs, env: { ...process.env, ...env }, maxBuffer: 1 << 24 },
            (err, stdout, stderr) => {
                if (err && typeof err.code !== 'number') return reject(err);
                resolve({ code: err ? err.code : 0, stdout, stderr });
            });
        if (input !== undefined) p.stdin.end(input);
    });
}

const healthz = () => `https://${HOST}:${d.port}/healthz`;

test('curl: /healthz with Connection: close gets the whole answer', async () => {
    const r = await run('curl', ['-sS', '--cacert', cert, '-H', 'Connection: close', '-w', '\\n%{http_code}', healthz()]);
    assert.equal(r.code, 0, r.stderr);
    const [body, status] = r.stdout.trim().split('\n');
    assert.equal(status, '200');
    assert.equal(JSON.parse(body).status, 'ok');
});

test('curl: three keep-alive requests on one TLS connection, then one with Connection: close', async () => {
    const url = healthz();
    const r = await run('curl', ['-sS', '-v', '--cacert', cert, url, url, '--next', '-sS', '-v', '--cacert', cert,
        '-H', 'Connection: close', url]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((r.stdout.match(/"status":"ok"/g) || []).length, 3, r.stdout);
    assert.match(r.stderr, /Re-using existing connection/, 'the connection was kept between requests');
});

test('curl: a publish over https with Connection: close is answered', async () => {
    const user = uid('curl');
    const r = await run('curl', ['-sS', '--cacert', cert, '-H', 'Connection: close', '-H', 'Authorization: Bearer k',
        '-H', 'Content-Type: application/json', '--data', JSON.stringify({ user_id: user, type: 'chunk', data: {} }),
        `https://${HOST}:${d.port}/v1/publish`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).seq, 1);
});

test('openssl s_client: HTTP/1.1 with Connection: close, and HTTP/1.0, are answered whole, then closed', async () => {
    for (const req of ['GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'GET /healthz HTTP/1.0\r\n\r\n']) {
        const r = await run('openssl', ['s_client', '-connect', `${HOST}:${d.port}`, '-CAfile', cert, '-quiet', '-ign_eof'],
            { input: req });
        assert.match(r.stdout, /^HTTP\/1\.1 200 /, `${JSON.stringify(req)}: ${r.stdout} ${r.stderr}`);
        assert.match(r.stdout, /"status":"ok"/);
        assert.equal(r.code, 0, r.stderr);
    }
});

test('openssl s_client: a malformed request gets its 400 with a JSON reason before the close', async () => {
    const r = await run('openssl', ['s_client', '-connect', `${HOST}:${d.port}`, '-CAfile', cert, '-quiet', '-ign_eof'],
        { input: 'NOT A REQUEST\r\n\r\n' });
    assert.match(r.stdout, /^HTTP\/1\.1 400 /, r.stdout + r.stderr);
    assert.match(r.stdout, /\{"error":"[^"]+"\}/);
});

/** Python's ssl module, strict about the end: an EOF without close_notify raises. */
const PY_STRICT = `
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as raw:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as s:
        s.sendall(b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        data = b""
        while True:
            chunk = s.recv(65536)   # b"" only on close_notify; a bare TCP close raises
            if not chunk:
                break
            data += chunk
sys.stdout.write(data.decode())
`;

test('Python ssl: the answer ends with close_notify (no ragged EOF)', async () => {
    const r = await run('python3', ['-c', PY_STRICT, String(d.port), cert]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 200 /);
    assert.match(r.stdout, /"status":"ok"/);
});

test('Python urllib (always Connection: close): /healthz over https', async () => {
    const code = `import json, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
with urllib.request.urlopen("https://127.0.0.1:%s/healthz" % sys.argv[1], context=ctx, timeout=5) as r:
    print(r.status, json.load(r)["status"])`;
    const r = await run('python3', ['-c', code, String(d.port), cert]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '200 ok');
});

test('the Python example publisher streams a whole run over https', async () => {
    const user = uid('pyex');
    const ws = new WebSocket(`wss://${HOST}:${d.port}/ws?user_id=${user}`, { ca: fs.readFileSync(cert) });
    const c = new WsClient(ws);
    await withTimeout(new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); }), 5000, 'wss open');
    await c.next((m) => m.type === 'connected', 3000);
    const r = await run('python3', [path.join(REPO, 'examples', 'python_agent.py'), '--url', `https://${HOST}:${d.port}`,
        '--user', user, '--api-key', 'k'], { env: { SSL_CERT_FILE: cert } });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const done = await c.next((m) => m.type === 'agent_completed', 5000, 'agent_completed');
    assert.equal(done.run_id, out.run_id);
    assert.equal(done.seq, out.last_seq);
    ws.close();
});

function nodeGet(agent) {
    return withTimeout(new Promise((resolve, reject) => {
        const req = https.get({ host: HOST, port: d.port, path: '/healthz', ca: fs.readFileSync(cert), agent }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (s) => (text += s));
            res.on('end', () => resolve({ status: res.statusCode, text, reused: req.reusedSocket }));
        });
        req.on('error', reject);
    }), 5000, 'https.get');
}

test('Node https without an agent (Connection: close) gets its answers', async () => {
    for (let i = 0; i < 3; i++) {
        const r = await nodeGet(false);
        assert.equal(r.status, 200);
        assert.equal(JSON.parse(r.text).status, 'ok');
    }
});

test('Node https with a keep-alive agent: answers on one reused connection', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const got = [];
    for (let i = 0; i < 3; i++) got.push(await nodeGet(agent));
    agent.destroy();
    assert.ok(got.every((r) => r.status === 200 && JSON.parse(r.text).status === 'ok'));
    assert.equal(got[2].reused, true, 'the third request reused the connection');
});

test('wss: a close started by the server (POST /v1/disconnect: 4003) reaches the client with its code', async () => {
    const user = uid('wssclose');
    const ws = new WebSocket(`wss://${HOST}:${d.port}/ws?user_id=${user}`, { ca: fs.readFileSync(cert) });
    const c = new WsClient(ws);
    await withTimeout(new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); }), 5000, 'wss open');
    await c.next((m) => m.type === 'connected', 3000);
    const r = await run('curl', ['-sS', '--cacert', cert, '-H', 'Authorization: Bearer k', '-H', 'Content-Type: application/json',
        '--data', JSON.stringify({ user_id: user }), `https://${HOST}:${d.port}/v1/disconnect`]);
    assert.equal(JSON.parse(r.stdout).disconnected, 1, r.stdout + r.stderr);
    await withTimeout(c.closed, 5000, 'close');
    assert.equal(c.closeInfo.code, 4003, JSON.stringify(c.closeInfo));
});

test('a raw TLS client sees the HTTP/1.0 answer, then close_notify, then EOF', async () => {
    const s = tls.connect({ host: HOST, port: d.port, ca: fs.readFileSync(cert), servername: undefined });
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (x) => (text += x));
    await withTimeout(new Promise((res, rej) => { s.once('secureConnect', res); s.once('error', rej); }), 5000, 'tls');
    s.write('GET /healthz HTTP/1.0\r\n\r\n');
    await withTimeout(new Promise((res, rej) => { s.once('end', res); s.once('error', rej); }), 5000, 'end');
    assert.match(text, /^HTTP\/1\.1 200 [\s\S]*"status":"ok"/);
    s.destroy();
});
