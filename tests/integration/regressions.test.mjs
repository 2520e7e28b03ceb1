// Bugs the fuzzers found, as the client sees them (their raw inputs are also replayed by
// `make fuzz-test` from tests/fuzz/regressions/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonFor, rawRequest, RawHttp, encodeFrame, uid, withTimeout } from './helpers.mjs';

test('a publish whose error would quote a cut UTF-8 character still gets a 400 JSON answer', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    // An unknown 64-byte key whose last character is cut by the reason's %.64s.
    const key = 'a'.repeat(63) + 'é';
    const body = `{"${key}":1}`;
    const r = await rawRequest(d.port, `POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    assert.equal(r.status, 400);
    assert.match(JSON.parse(r.text).error, /unknown field$/);
    // jansson's "near '...'" quoting a lone byte of a broken escape.
    const bad = Buffer.concat([Buffer.from('{"user_id":"u\\u'), Buffer.from([0xd6, 0x8a]), Buffer.from('"}')]);
    const r2 = await rawRequest(d.port, Buffer.concat([Buffer.from(`POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: ${bad.length}\r\n\r\n`), bad]));
    assert.equal(r2.status, 400);
    assert.match(JSON.parse(r2.text).error, /^invalid JSON/);
});

test('an upgrade with LF-only header lines: a frame sent right behind it is answered', async (t) => {
    const d = await daemonFor(t, ['--auth=none']);
    const c = await RawHttp.connect(d.port);
    try {
        const req = `GET /ws?user_id=${uid()} HTTP/1.1\nHost: h\nUpgrade: websocket\nConnection: Upgrade\n` +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n';
        await c.write(Buffer.concat([Buffer.from(req), encodeFrame(0x8, Buffer.from([0x03, 0xe8]))]));
        // 101, then `connected`, then our close echoed: look for the close frame 88 02 03 e8.
        await withTimeout((async () => {
            while (c.buf.indexOf(Buffer.from([0x88, 0x02, 0x03, 0xe8])) < 0) await new Promise((r) => setTimeout(r, 20));
        })(), 3000, 'close echoed');
    } finally {
        c.destroy();
    }
});
