// TLS: --tls-cert/--tls-key serve wss:// and https:// (TLS 1.2+), with a self-signed
// certificate this test makes itself with the openssl command.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import WebSocket from 'ws';
import { startDaemon, HOST, WsClient, withTimeout, uid } from './helpers.mjs';

let dir, cert, key, d;

before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentcast-tls-'));
    cert = path.join(dir, 'cert.pem');
    key = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
        '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    d = await startDaemon(['--auth=none', '--tls-cert', cert, '--tls-key', key]);
});

after(async () => {
    if (d) await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
});

function httpsRequest(port, pathname, { method = 'GET', body, minVersion, maxVersion } = {}) {
    return withTimeout(new Promise((resolve, reject) => {
        const req = https.request({ host: HOST, port, path: pathname, method, ca: fs.readFileSync(cert),
            minVersion, maxVersion, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (s) => (text += s));
            res.on('end', () => resolve({ status: res.statusCode, text }));
        });
        req.on('error', reject);
        if (body) req.write(body);
        req.end();
    }), 5000, `https ${method} ${pathname}`);
}

async function wssConnect(port, user) {
    const ws = new WebSocket(`wss://${HOST}:${port}/ws?user_id=${user}`, { ca: fs.readFileSync(cert) });
    const c = new WsClient(ws);
    await withTimeout(new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    }), 5000, 'wss open');
    const first = await c.next(() => true, 3000);
    assert.equal(first.type, 'connected');
    return c;
}

test('the daemon logs tls=on when --tls-cert and --tls-key are given', () => {
    assert.ok(d.logs.some((l) => l.includes('event=listening') && l.includes('tls=on')), d.logs.join('\n'));
});

test('https: /healthz answers over TLS with the certificate the test made', async () => {
    const r = await httpsRequest(d.port, '/healthz');
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.text), { status: 'ok', broker: 'up' });
});

test('wss: an event published over https reaches the user over wss, in order', async () => {
    const user = uid('tls');
    const c = await wssConnect(d.port, user);
    try {
        const events = [];
        for (let i = 0; i < 50; i++) events.push({ user_id: user, type: 'note', data: { i, pad: 'x'.repeat(i * 40) } });
        const r = await httpsRequest(d.port, '/v1/publish', { method: 'POST', body: JSON.stringify(events) });
        assert.equal(r.status, 200, r.text);
        for (let i = 0; i < 50; i++) {
            const e = await c.next((m) => m.type === 'note', 3000);
            assert.equal(e.seq, i + 1);
            assert.equal(e.data.i, i);
        }
    } finally {
        c.ws.terminate();
    }
});

test('wss: a large event (300 KiB) spans many TLS records and arrives intact', async () => {
    const user = uid('tls');
    const c = await wssConnect(d.port, user);
    try {
        const big = 'y'.repeat(300 * 1024);
        const r = await httpsRequest(d.port, '/v1/publish', { method: 'POST', body: JSON.stringify({ user_id: user, type: 'note', data: { big } }) });
        assert.equal(r.status, 200, r.text);
        const e = await c.next((m) => m.type === 'note', 5000);
        assert.equal(e.data.big.length, big.length);
    } finally {
        c.ws.terminate();
    }
});

test('TLS 1.1 is refused (TLS 1.2 is the minimum)', async () => {
    await assert.rejects(httpsRequest(d.port, '/healthz', { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }));
    // and the daemon keeps serving
    assert.equal((await httpsRequest(d.port, '/healthz')).status, 200);
});

test('plain HTTP to the TLS port gets no HTTP answer, and the daemon keeps serving', async () => {
    const got = await withTimeout(new Promise((resolve) => {
        const s = net.connect(d.port, HOST, () => s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
        let buf = '';
        s.on('data', (b) => (buf += b.toString('latin1')));
        s.on('close', () => resolve(buf));
        s.on('error', () => resolve(buf));
        setTimeout(() => s.destroy(), 2000);
    }), 4000, 'plain http to tls port');
    assert.ok(!got.startsWith('HTTP/1.1 200'), `got ${JSON.stringify(got.slice(0, 40))}`);
    assert.equal((await httpsRequest(d.port, '/healthz')).status, 200);
});

test('a TLS client that stops after ClientHello is closed by --handshake-timeout', async () => {
    const d2 = await startDaemon(['--auth=none', '--tls-cert', cert, '--tls-key', key, '--handshake-timeout', '0.3']);
    try {
        const closed = await withTimeout(new Promise((resolve) => {
            const s = net.connect(d2.port, HOST, () => s.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05])));
            s.on('close', () => resolve(true));
            s.on('error', () => {});
        }), 3000, 'half handshake closed');
        assert.equal(closed, true);
    } finally {
        await d2.stop();
    }
});

test('a mismatched --tls-key refuses to start with a clear message', async () => {
    const other = path.join(dir, 'other.pem');
    execFileSync('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', other], { stdio: 'ignore' });
    await assert.rejects(startDaemon(['--auth=none', '--tls-cert', cert, '--tls-key', other], {}, { startTimeoutMs: 2000 }));
});

test('a TLS session: tls.connect sees TLS 1.2 or 1.3', async () => {
    const v = await withTimeout(new Promise((resolve, reject) => {
        const s = tls.connect({ host: HOST, port: d.port, ca: fs.readFileSync(cert) }, () => {
            const p = s.getProtocol();
            s.end();
            resolve(p);
        });
        s.on('error', reject);
    }), 3000, 'tls connect');
    assert.ok(v === 'TLSv1.2' || v === 'TLSv1.3', v);
});
