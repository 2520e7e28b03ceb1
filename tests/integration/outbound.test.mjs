// Outbound HTTP (libcurl on the gateway's loop): the message webhook over https:// verified
// against a test CA (--outbound-ca-file), refused without it, with connections reused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import fs from 'node:fs';
import { daemonFor, startDaemon, connect, closeAfter, uid, waitFor } from './helpers.mjs';
import { makeCa, tmpDir } from './identity_helpers.mjs';

async function httpsWebhook(t, { cert, key }) {
    const w = { got: [], connections: 0 };
    w.server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
        let body = '';
        req.on('data', (s) => (body += s));
        req.on('end', () => {
            w.got.push({ url: req.url, type: req.headers['content-type'], body: JSON.parse(body) });
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end('ok');
        });
    });
    w.server.keepAliveTimeout = 60000;
    w.server.on('secureConnection', () => (w.connections += 1));
    await new Promise((resolve) => w.server.listen(0, '127.0.0.1', resolve));
    w.url = `https://127.0.0.1:${w.server.address().port}/hook`;
    t.after(() => new Promise((resolve) => { w.server.closeAllConnections(); w.server.close(resolve); }));
    return w;
}

test('--message-webhook https:// with --outbound-ca-file: delivered, one connection reused', async (t) => {
    const pki = makeCa(tmpDir(t, 'agentcast-ca-'));
    const w = await httpsWebhook(t, pki);
    const d = await daemonFor(t, ['--auth=none', '--message-webhook', w.url, '--outbound-ca-file', pki.ca]);
    const user = uid('tls-hook');
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    for (let i = 1; i <= 3; i++) {
        c.send({ type: 'user_message', text: `message ${i}` });
        await waitFor(() => w.got.length === i, 10000, `webhook delivery ${i}`);
    }
    assert.deepEqual(w.got.map((g) => g.body.text), ['message 1', 'message 2', 'message 3']);
    assert.equal(w.got[0].body.user_id, user);
    assert.equal(w.got[0].type, 'application/json');
    assert.equal(w.connections, 1, 'the TLS connection is kept and reused');
    assert.equal(c.all.filter((m) => m.type === 'error').length, 0);
});

test('--message-webhook https:// with a certificate the gateway cannot verify: the sender gets an error', async (t) => {
    const pki = makeCa(tmpDir(t, 'agentcast-ca-'));
    const w = await httpsWebhook(t, pki);
    const d = await daemonFor(t, ['--auth=none', '--message-webhook', w.url]);
    const c = closeAfter(t, await connect(d.port, { user_id: uid('tls-hook') }));
    c.send({ type: 'user_message', text: 'hello?' });
    const e = await c.next((m) => m.type === 'error', 15000);
    assert.match(e.data.error, /message not delivered: cannot connect to the webhook \(.*certificate/i);
    assert.equal(e.data.attempts, 4);
    assert.equal(w.got.length, 0);
});

test('--outbound-ca-file that cannot be read, or a webhook that is not http(s): invalid configuration', async (t) => {
    const junk = `${tmpDir(t, 'agentcast-ca-')}/junk.pem`;
    fs.writeFileSync(junk, 'not a certificate\n');
    for (const args of [['--outbound-ca-file', '/nonexistent/ca.pem'],
        ['--message-webhook', 'https://127.0.0.1:1/x', '--outbound-ca-file', junk], ['--message-webhook', 'ftp://127.0.0.1/x'],
        ['--auth=proxy'], ['--auth=proxy', '--auth-proxy-url', 'file:///etc/passwd']]) {
        const d = await startDaemon(['--auth=none', ...args]).catch((err) => err);
        assert.ok(d instanceof Error, `${args.join(' ')} must not start`);
        assert.match(d.message, /code=2/, args.join(' '));
    }
});
