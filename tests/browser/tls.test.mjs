// Chromium over https:// and wss:// (agentcastd --tls-cert): the page loads, its WebSocket
// receives events published over https in order, and a close started by the server reaches
// the page with its code (the closing handshake is flushed before close_notify and the TCP
// close).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startDaemon, uid, withTimeout } from '../integration/helpers.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
let dir, cert, key, d, browser;

before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentcast-btls-'));
    cert = path.join(dir, 'cert.pem');
    key = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
        '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    d = await startDaemon(['--auth=none', '--tls-cert', cert, '--tls-key', key]);
    browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
});

after(async () => {
    if (browser) await browser.close();
    if (d) await d.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function httpsPost(pathname, body) {
    return withTimeout(new Promise((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port: d.port, path: pathname, method: 'POST', ca: fs.readFileSync(cert),
            headers: { 'content-type': 'application/json', connection: 'close' } }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (s) => (text += s));
            res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(text) }));
        });
        req.on('error', reject);
        req.end(JSON.stringify(body));
    }), 5000, `POST ${pathname}`);
}

test('Chromium: a wss:// WebSocket gets the events published over https, in order, and the server\'s close code', async () => {
    // The test's own certificate is not in Chromium's store: this context accepts it.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const res = await page.goto(`https://127.0.0.1:${d.port}/healthz`);
    assert.equal(res.status(), 200);
    const user = uid('chromium-tls');
    await page.evaluate((u) => new Promise((resolve, reject) => {
        window.got = [];
        window.closeInfo = null;
        const ws = new WebSocket(`wss://${location.host}/ws?user_id=${u}`);
        ws.onmessage = (e) => {
            const m = JSON.parse(e.data);
            window.got.push(m);
            if (m.type === 'connected') resolve();
        };
        ws.onclose = (e) => (window.closeInfo = { code: e.code, reason: e.reason });
        ws.onerror = () => reject(new Error('wss error'));
    }), user);
    const body = Array.from({ length: 20 }, (_, i) => ({ user_id: user, type: 'chunk', data: { i } }));
    const r = await httpsPost('/v1/publish', body);
    assert.equal(r.status, 200);
    await page.waitForFunction(() => window.got.filter((m) => m.type === 'chunk').length === 20, null, { timeout: 10000 });
    const seqs = await page.evaluate(() => window.got.filter((m) => m.type === 'chunk').map((m) => m.seq));
    assert.deepEqual(seqs, Array.from({ length: 20 }, (_, i) => i + 1));
    const t0 = Date.now();
    const dis = await httpsPost('/v1/disconnect', { user_id: user });
    assert.equal(dis.json.disconnected, 1);
    await page.waitForFunction(() => window.closeInfo !== null, null, { timeout: 10000 });
    console.log(`close seen by the page ${Date.now() - t0} ms after the disconnect`);
    assert.equal((await page.evaluate(() => window.closeInfo)).code, 4003);
    await context.close();
});
