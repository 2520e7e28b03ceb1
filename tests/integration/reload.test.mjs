// SIGHUP: the TLS certificate and the JWKS file are reloaded without dropping connections;
// a file that does not load keeps the previous version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import WebSocket from 'ws';
import { daemonFor, connect, connectRefused, closeAfter, publishOk, nowS, waitFor, HOST, WsClient, withTimeout, assertJsonError } from './helpers.mjs';
import { makeKey, jwkOf, signJwt, makeCa, tmpDir } from './identity_helpers.mjs';

const countLogs = (d, re) => d.logs.filter((l) => re.test(l)).length;

async function hup(d, re) {
    const before = countLogs(d, re);
    d.proc.kill('SIGHUP');
    await waitFor(() => countLogs(d, re) > before, 10000, `log ${re} after SIGHUP`);
}

test('SIGHUP reloads the JWKS file: the new kid is accepted, the open connection stays', async (t) => {
    const dir = tmpDir(t, 'agentcast-reload-');
    const file = path.join(dir, 'jwks.json');
    const k1 = makeKey('ES256');
    const k2 = makeKey('EdDSA');
    fs.writeFileSync(file, JSON.stringify({ keys: [jwkOf(k1, 'k1', 'ES256')] }));
    const d = await daemonFor(t, ['--jwt-jwks-file', file]);
    const token2 = signJwt(k2, 'EdDSA', { sub: 'u2', exp: nowS() + 300 }, { kid: 'k2' });
    assertJsonError(assert, await connectRefused(d.port, { token: token2 }), 401, 'token: no key for this kid or alg');
    const open = closeAfter(t, await connect(d.port, { token: signJwt(k1, 'ES256', { sub: 'u1', exp: nowS() + 300 }, { kid: 'k1' }) }));

    fs.writeFileSync(file, JSON.stringify({ keys: [jwkOf(k2, 'k2', 'EdDSA')] }));
    await hup(d, /event=jwks_loaded from=file keys=1/);
    const c2 = closeAfter(t, await connect(d.port, { token: token2 }));
    assert.equal(c2.hello.user_id, 'u2');

    // A broken file keeps the keys in use.
    fs.writeFileSync(file, '{"keys": [');
    await hup(d, /event=jwks_reload_failed keys_kept=1/);
    closeAfter(t, await connect(d.port, { token: token2 }));

    await publishOk(d.port, { user_id: 'u1', type: 'agent_started', data: { agent: 'a' } });
    assert.equal((await open.next((m) => m.type === 'agent_started')).user_id, 'u1');
    assert.ok(open.isOpen);
});

async function wss(port, ca) {
    let peer;
    const ws = new WebSocket(`wss://${HOST}:${port}/ws?user_id=tls-user`, { ca });
    ws.once('upgrade', (res) => (peer = res.socket.getPeerCertificate()));
    const c = new WsClient(ws);
    await withTimeout(new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    }), 5000, 'wss open');
    c.hello = await c.next((m) => m.type === 'connected', 3000);
    c.fingerprint = peer.fingerprint256;
    return c;
}

test('SIGHUP reloads the TLS certificate: new handshakes get the new one, the open connection stays', async (t) => {
    const dir = tmpDir(t, 'agentcast-tls-reload-');
    const a = makeCa(dir, 'a');
    const b = makeCa(dir, 'b');
    const cert = path.join(dir, 'live.pem');
    const key = path.join(dir, 'live.key');
    fs.copyFileSync(a.cert, cert);
    fs.copyFileSync(a.key, key);
    const ca = fs.readFileSync(a.ca);
    const d = await daemonFor(t, ['--auth=none', '--tls-cert', cert, '--tls-key', key]);
    const first = closeAfter(t, await wss(d.port, ca));

    fs.copyFileSync(b.cert, cert);
    fs.copyFileSync(b.key, key);
    await hup(d, /event=reloaded what=tls/);
    const second = closeAfter(t, await wss(d.port, ca));
    assert.notEqual(second.fingerprint, first.fingerprint, 'the new certificate is served');

    // A key that does not match keeps the certificate in use.
    fs.copyFileSync(a.key, key);
    await hup(d, /event=reload_failed what=tls/);
    const third = closeAfter(t, await wss(d.port, ca));
    assert.equal(third.fingerprint, second.fingerprint);

    const status = await withTimeout(new Promise((resolve, reject) => {
        const req = https.request({ host: HOST, port: d.port, path: '/v1/publish', method: 'POST', ca,
            headers: { 'content-type': 'application/json' } }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ user_id: 'tls-user', type: 'agent_started', data: { agent: 'a' } }));
    }), 5000, 'https publish');
    assert.equal(status, 200);
    for (const c of [first, second, third]) {
        assert.equal((await c.next((m) => m.type === 'agent_started')).user_id, 'tls-user');
    }
    assert.ok(first.isOpen);
});
