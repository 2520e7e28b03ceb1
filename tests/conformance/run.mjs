// RFC 6455 conformance suite for agentcastd, written from the RFC and README.md with raw
// sockets (raw.mjs; no WebSocket library). It starts the real daemon on 127.0.0.1 port 0,
// runs each case on fresh connections, prints one line per case ("ok   ID name" or
// "FAIL ID name: why") and a last line "N passed, M failed", stops the daemon with SIGTERM
// and checks it exits 0. Exit status 1 when any case fails.
//
//   node tests/conformance/run.mjs          # $AGENTCAST_BIN or build/agentcastd

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
    HOST,
    OP,
    RawClient,
    acceptFor,
    closeFrame,
    cont,
    describe,
    expectCloseThenEnd,
    fragments,
    frame,
    handshakeRequest,
    openWs,
    ping,
    pong,
    sleep,
    split,
    text,
    withTimeout,
} from './raw.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.AGENTCAST_BIN || path.join(REPO, 'build', 'agentcastd');
const MAX_MESSAGE = 65536;
const ARGS = ['--listen', `${HOST}:0`, '--auth=none', '--max-message-size', String(MAX_MESSAGE)];
const CASE_MS = 10000; // a cap per case on top of the per-wait timeouts
const SHUTDOWN_MS = 12000; // --shutdown-timeout defaults to 10 s

// ---- the daemon ------------------------------------------------------------------------

const daemon = { proc: null, port: 0, log: [] };

function startDaemon() {
    const proc = spawn(BIN, ARGS, { stdio: ['ignore', 'ignore', 'pipe'] });
    daemon.proc = proc;
    daemon.exit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    let pending = '';
    return withTimeout(
        new Promise((resolve, reject) => {
            proc.once('error', reject);
            proc.once('exit', (code, signal) => reject(new Error(`daemon exited (${code ?? signal}) before listening`)));
            proc.stderr.on('data', (d) => {
                pending += d.toString();
                let i;
                while ((i = pending.indexOf('\n')) >= 0) {
                    const line = pending.slice(0, i);
                    pending = pending.slice(i + 1);
                    daemon.log.push(line);
                    if (daemon.log.length > 400) daemon.log.shift();
                    const m = /event=listening addr=(\S+):(\d+)/.exec(line);
                    if (m && !daemon.port) {
                        daemon.port = Number(m[2]);
                        resolve();
                    }
                }
            });
        }),
        5000,
        `"event=listening" from ${BIN}`,
    );
}

const alive = () => daemon.proc.exitCode === null && daemon.proc.signalCode === null;

process.on('exit', () => {
    if (daemon.proc && alive()) daemon.proc.kill('SIGKILL');
});

/** The daemon's resident set in KiB (/proc/<pid>/status VmRSS). */
function rssKiB() {
    const s = fs.readFileSync(`/proc/${daemon.proc.pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+) kB/m.exec(s);
    if (!m) throw new Error('no VmRSS in /proc/<pid>/status');
    return Number(m[1]);
}

// ---- cases -----------------------------------------------------------------------------

const cases = [];
let groupNo = 0;
let caseNo = 0;
let groupName = '';
const groupNames = {};

function group(name) {
    groupNo += 1;
    caseNo = 0;
    groupName = name;
    groupNames[groupNo] = name;
}

/** One case: `fn(ctx)` throws to fail. */
function t(name, fn) {
    caseNo += 1;
    cases.push({ id: `${groupNo}.${caseNo}`, group: groupNo, name, fn });
}

/** One numbered family of cases, one per parameter: ID.k. */
function each(params, nameOf, fn) {
    caseNo += 1;
    params.forEach((p, k) => {
        cases.push({ id: `${groupNo}.${caseNo}.${k + 1}`, group: groupNo, name: nameOf(p), fn: (ctx) => fn(ctx, p) });
    });
}

/** The daemon keeps serving: a brand-new normal client still connects and gets `connected`. */
function stillServing() {
    t(`daemon still serving after "${groupName}": a fresh client gets connected`, async (ctx) => {
        const c = await ctx.open();
        await c.write(ping('alive'));
        await expectPong(c, 'alive');
    });
}

let uniq = 0;
function makeCtx() {
    const clients = [];
    return {
        clients,
        user: () => `conf-${process.pid}-${++uniq}`,
        async connect() {
            const c = await RawClient.connect(daemon.port);
            clients.push(c);
            return c;
        },
        async open() {
            const c = await openWs(daemon.port, this.user());
            clients.push(c);
            return c;
        },
    };
}

// ---- shared checks ---------------------------------------------------------------------

/** Concatenates Buffers and strings (as UTF-8). */
const B = (...parts) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
const json = (type) => Buffer.from(JSON.stringify({ type }));
const bytes = (...xs) => Buffer.from(xs);

function assert(cond, msg) {
    if (!cond) throw new Error(msg);
}

async function expectPong(c, payload) {
    const want = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    const f = await c.nextFrame();
    assert(f.opcode === OP.PONG, `expected a pong, got ${describe(f)}`);
    assert(f.violations.length === 0, `server pong breaks RFC 6455: ${f.violations.join(', ')}`);
    assert(f.payload.equals(want), `pong payload ${f.payload.toString('hex')} != ping payload ${want.toString('hex')}`);
}

/** The next frame is the error envelope answering an unknown type; checks it names `type`. */
async function expectUnknownType(c, type) {
    const m = await c.nextJson();
    assert(m.type === 'error', `expected an error envelope, got ${JSON.stringify(m)}`);
    const err = m.data && m.data.error;
    assert(
        typeof err === 'string' && err.includes(`"${type}"`),
        `error envelope does not name type ${JSON.stringify(type)}: ${JSON.stringify(m)}`,
    );
}

/** Text `{"type":"pong"}` is accepted silently: check with a ping that nothing came first. */
async function expectAcceptedSilently(c) {
    await c.write(ping('after'));
    await expectPong(c, 'after');
}

async function handshake(ctx, opts = {}) {
    const c = await ctx.connect();
    const req = handshakeRequest({ path: `/ws?user_id=${ctx.user()}`, host: `${HOST}:${daemon.port}`, ...opts });
    await c.write(req.bytes);
    const r = await c.readResponse();
    return { c, r, key: req.key };
}

/** A handshake the README's refusal table answers with `status`, a JSON reason, and a close. */
async function refused(ctx, opts, status, { header } = {}) {
    const { c, r } = await handshake(ctx, opts);
    assert(r.status !== 101, `expected ${status}, got 101 Switching Protocols`);
    assert(r.status === status, `expected ${status}, got ${r.status} ${r.body}`);
    let body;
    try {
        body = JSON.parse(r.body);
    } catch {
        throw new Error(`body is not JSON: ${JSON.stringify(r.body)}`);
    }
    assert(typeof body.error === 'string', `body has no "error": ${r.body}`);
    if (header) {
        const [k, v] = header;
        const got = r.headers[k.toLowerCase()];
        assert(got === v, `expected header "${k}: ${v}", got ${JSON.stringify(got)}`);
    }
    try {
        await c.expectEnd();
    } catch (e) {
        throw new Error(`${status} "${body.error}" sent but the connection stays open (README: refusals close it): ${e.message}`);
    }
}

function checkAccept(r, key) {
    const got = r.headers['sec-websocket-accept'];
    assert(got === acceptFor(key), `Sec-WebSocket-Accept ${got} != ${acceptFor(key)}`);
}

async function upgraded(ctx, opts) {
    const { c, r, key } = await handshake(ctx, opts);
    assert(r.status === 101, `expected 101, got ${r.status} ${r.body}`);
    checkAccept(r, key);
    const m = await c.nextJson();
    assert(m.type === 'connected', `expected connected, got ${JSON.stringify(m)}`);
    return c;
}

/** Opens a connection, sends `bytes` in one write, expects close `code` then TCP closed. */
async function failsWith(ctx, bytesOut, code) {
    const c = await ctx.open();
    await c.write(bytesOut);
    await expectCloseThenEnd(c, code);
}

// ---- 1. opening handshake (RFC 6455 4.2) --------------------------------------------

group('handshake');

t('valid upgrade -> 101 with the correct Sec-WebSocket-Accept, then connected', async (ctx) => {
    const { c, r, key } = await handshake(ctx);
    assert(r.status === 101, `expected 101, got ${r.status} ${r.body}`);
    assert(/^websocket$/i.test(r.headers.upgrade ?? ''), `Upgrade: ${r.headers.upgrade}`);
    assert(/(^|,)\s*upgrade\s*(,|$)/i.test(r.headers.connection ?? ''), `Connection: ${r.headers.connection}`);
    checkAccept(r, key);
    const ext = r.headers['sec-websocket-extensions'];
    assert(ext === undefined, `extension negotiated unasked: ${ext}`);
    const m = await c.nextJson();
    assert(m.type === 'connected', `expected connected, got ${JSON.stringify(m)}`);
});

t('RFC 6455 4.2.2 sample key dGhlIHNhbXBsZSBub25jZQ== -> s3pPLMBiTxaQ9kYGzzhZRbK+xOo=', async (ctx) => {
    const { r } = await handshake(ctx, { key: 'dGhlIHNhbXBsZSBub25jZQ==' });
    assert(r.status === 101, `expected 101, got ${r.status} ${r.body}`);
    assert(r.headers['sec-websocket-accept'] === 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', `got ${r.headers['sec-websocket-accept']}`);
});

t('missing Sec-WebSocket-Key -> 400', (ctx) => refused(ctx, { key: null }, 400));
t('short Sec-WebSocket-Key (base64 of 15 bytes) -> 400', (ctx) =>
    refused(ctx, { key: Buffer.alloc(15, 7).toString('base64') }, 400));
t('long Sec-WebSocket-Key (base64 of 17 bytes) -> 400', (ctx) =>
    refused(ctx, { key: Buffer.alloc(17, 7).toString('base64') }, 400));
t('non-base64 Sec-WebSocket-Key (24 chars) -> 400', (ctx) => refused(ctx, { key: '!!!!!!!!!!!!!!!!!!!!!!==' }, 400));
t('missing Sec-WebSocket-Version -> 426 with Sec-WebSocket-Version: 13', (ctx) =>
    refused(ctx, { version: null }, 426, { header: ['Sec-WebSocket-Version', '13'] }));
t('Sec-WebSocket-Version: 8 -> 426 with Sec-WebSocket-Version: 13', (ctx) =>
    refused(ctx, { version: '8' }, 426, { header: ['Sec-WebSocket-Version', '13'] }));

t('POST /ws with upgrade headers -> 405, no 101', async (ctx) => {
    const { c, r } = await handshake(ctx, { method: 'POST', extra: ['Content-Length: 0'] });
    assert(r.status !== 101, 'expected 405, got 101 Switching Protocols');
    assert(r.status === 405, `expected 405, got ${r.status} ${r.body}`);
    assert(/GET/.test(r.headers.allow ?? ''), `405 without "Allow: GET": ${JSON.stringify(r.headers.allow)}`);
    await sleep(50);
    assert(c.frames.length === 0 && c.buf.length === 0, 'bytes after the 405');
});

t('missing Upgrade header -> 426, no 101', (ctx) => refused(ctx, { upgrade: null }, 426));
t('Connection without the Upgrade token (keep-alive) -> 426, no 101', (ctx) => refused(ctx, { connection: 'keep-alive' }, 426));

t('Connection: keep-alive, Upgrade -> 101', (ctx) => upgraded(ctx, { connection: 'keep-alive, Upgrade' }));
t('tokens in other cases (Upgrade: WebSocket, Connection: upgrade) -> 101', (ctx) =>
    upgraded(ctx, { upgrade: 'WebSocket', connection: 'upgrade' }));

t('request written 1 byte at a time -> 101, then connected', async (ctx) => {
    const c = await ctx.connect();
    const req = handshakeRequest({ path: `/ws?user_id=${ctx.user()}`, host: `${HOST}:${daemon.port}` });
    await c.writeBytewise(req.bytes);
    const r = await c.readResponse();
    assert(r.status === 101, `expected 101, got ${r.status} ${r.body}`);
    assert(r.headers['sec-websocket-accept'] === acceptFor(req.key), 'bad Sec-WebSocket-Accept');
    const m = await c.nextJson();
    assert(m.type === 'connected', `expected connected, got ${JSON.stringify(m)}`);
});

t('request and a ping frame in one write -> 101, connected, then the pong', async (ctx) => {
    const c = await ctx.connect();
    const req = handshakeRequest({ path: `/ws?user_id=${ctx.user()}`, host: `${HOST}:${daemon.port}` });
    await c.write(B(req.bytes, ping('early')));
    const r = await c.readResponse();
    assert(r.status === 101, `expected 101, got ${r.status} ${r.body}`);
    const m = await c.nextJson();
    assert(m.type === 'connected', `expected connected first, got ${JSON.stringify(m)}`);
    await expectPong(c, 'early');
});

stillServing();

// ---- 2. ping and pong (RFC 6455 5.5.2, 5.5.3) ----------------------------------------

group('ping/pong');

t('ping with 0-byte payload echoed', async (ctx) => {
    const c = await ctx.open();
    await c.write(ping(''));
    await expectPong(c, '');
});

t('ping with 125-byte payload echoed', async (ctx) => {
    const c = await ctx.open();
    const p = Buffer.from(Array.from({ length: 125 }, (_, i) => (i * 131 + 7) & 0xff));
    await c.write(ping(p));
    await expectPong(c, p);
});

t('burst of 50 pings in one write -> 50 pongs in order', async (ctx) => {
    const c = await ctx.open();
    await c.write(Buffer.concat(Array.from({ length: 50 }, (_, i) => ping(`p${i}`))));
    for (let i = 0; i < 50; i++) {
        try {
            await expectPong(c, `p${i}`);
        } catch (e) {
            throw new Error(`pong #${i}: ${e.message}`);
        }
    }
});

t('ping written 1 byte at a time -> pong', async (ctx) => {
    const c = await ctx.open();
    await c.writeBytewise(ping('split'));
    await expectPong(c, 'split');
});

t('unsolicited pong ignored: connection stays, next ping answered', async (ctx) => {
    const c = await ctx.open();
    await c.write(pong('unasked'));
    await c.expectSilence(100);
    await c.write(ping('next'));
    await expectPong(c, 'next');
});

stillServing();

// ---- 3. framing violations -> 1002 (RFC 6455 5.1-5.5, 7.4.1) -----------------------

group('framing violations');

t('unmasked text frame -> 1002', (ctx) => failsWith(ctx, text('{"type":"pong"}', { mask: false }), 1002));
t('unmasked ping frame -> 1002', (ctx) => failsWith(ctx, ping('x', { mask: false }), 1002));
each([4, 2, 1], (r) => `RSV${{ 4: 1, 2: 2, 1: 3 }[r]} set on a text frame -> 1002`, (ctx, r) =>
    failsWith(ctx, text('{"type":"pong"}', { rsv: r }), 1002));
t('RSV1 set on a ping frame -> 1002', (ctx) => failsWith(ctx, ping('x', { rsv: 4 }), 1002));
each([3, 4, 5, 6, 7, 11, 12, 13, 14, 15], (op) => `reserved opcode ${op} -> 1002`, (ctx, op) =>
    failsWith(ctx, frame({ opcode: op, payload: 'x' }), 1002));
t('ping with a 126-byte payload -> 1002', (ctx) => failsWith(ctx, ping(Buffer.alloc(126, 0x61)), 1002));
t('close with a 126-byte payload -> 1002', (ctx) =>
    failsWith(ctx, closeFrame(1000, 'r'.repeat(124)), 1002));
t('fragmented ping (FIN=0) -> 1002', (ctx) => failsWith(ctx, ping('x', { fin: false }), 1002));
t('continuation frame with no message started -> 1002', (ctx) => failsWith(ctx, cont('{"type":"pong"}'), 1002));
t('new text frame inside a fragmented message -> 1002', (ctx) =>
    failsWith(ctx, B(text('{"type":', { fin: false }), text('"pong"}')), 1002));
t('unmasked 100000-byte text frame sent whole -> 1002 (the close survives the payload behind it)', (ctx) =>
    failsWith(ctx, text(Buffer.alloc(100000, 0x61), { mask: false }), 1002));
t('64-bit length with the most significant bit set -> 1002', (ctx) =>
    failsWith(ctx, frame({ opcode: OP.TEXT, payload: 'x', length: (1n << 63n) | 1n, lengthForm: 64 }), 1002));

stillServing();

// ---- 4. valid fragmentation (RFC 6455 5.4) -------------------------------------------

group('fragmentation');

each([2, 3, 10], (n) => `{"type":"x"} in ${n} fragments -> reassembled (error envelope names "x")`, async (ctx, n) => {
    const c = await ctx.open();
    await c.write(fragments(split(json('x'), n)));
    await expectUnknownType(c, 'x');
});
each([2, 3, 10], (n) => `{"type":"pong"} in ${n} fragments -> accepted silently`, async (ctx, n) => {
    const c = await ctx.open();
    await c.write(fragments(split(json('pong'), n)));
    await expectAcceptedSilently(c);
});

t('ping between fragments answered first, then the message', async (ctx) => {
    const c = await ctx.open();
    const [a, b] = split(json('x'), 2);
    await c.write(B(text(a, { fin: false }), ping('mid'), cont(b)));
    await expectPong(c, 'mid');
    await expectUnknownType(c, 'x');
});

t('empty fragments (first, middle and last) -> reassembled', async (ctx) => {
    const c = await ctx.open();
    const [a, b] = split(json('x'), 2);
    await c.write(fragments(['', a, '', b, '']));
    await expectUnknownType(c, 'x');
});

t('fragments in separate TCP writes -> reassembled', async (ctx) => {
    const c = await ctx.open();
    const parts = split(json('x'), 4);
    await c.writeEach(parts.map((p, i) => frame({ opcode: i ? OP.CONT : OP.TEXT, fin: i === 3, payload: p })));
    await expectUnknownType(c, 'x');
});

t('message after a fragmented one starts fresh', async (ctx) => {
    const c = await ctx.open();
    await c.write(B(fragments(split(json('x'), 3)), text(json('y'))));
    await expectUnknownType(c, 'x');
    await expectUnknownType(c, 'y');
});

t('fragmented binary message -> reassembled (error envelope, connection stays)', async (ctx) => {
    const c = await ctx.open();
    await c.write(fragments([bytes(1, 2), bytes(3)], OP.BINARY));
    const m = await c.nextJson();
    assert(m.type === 'error', `expected an error envelope, got ${JSON.stringify(m)}`);
    await expectAcceptedSilently(c);
});

stillServing();

// ---- 5. UTF-8 (RFC 6455 8.1, RFC 3629) -----------------------------------------------

group('UTF-8');

/** `{"type":"<raw bytes>"}` */
const typed = (raw) => B('{"type":"', raw, '"}');

const INVALID = [
    ['invalid byte FF', bytes(0xff)],
    ['lone continuation byte 80', bytes(0x80)],
    ['overlong C0 80', bytes(0xc0, 0x80)],
    ['overlong E0 80 80', bytes(0xe0, 0x80, 0x80)],
    ['overlong F0 80 80 80', bytes(0xf0, 0x80, 0x80, 0x80)],
    ['surrogate ED A0 80 (U+D800)', bytes(0xed, 0xa0, 0x80)],
    ['above U+10FFFF F4 90 80 80', bytes(0xf4, 0x90, 0x80, 0x80)],
];
each(INVALID, ([name]) => `${name} in a text message -> 1007`, (ctx, [, raw]) => failsWith(ctx, text(typed(raw)), 1007));

t('text message truncated inside a 3-byte sequence at its end (E2 82) -> 1007', (ctx) =>
    failsWith(ctx, text(B(json('x'), bytes(0xe2, 0x82))), 1007));
t('invalid sequence split across fragments (E2 82 | 28) -> 1007', (ctx) =>
    failsWith(ctx, fragments([B('{"type":"', bytes(0xe2, 0x82)), B(bytes(0x28), '"}')]), 1007));
t('fragmented message whose last fragment ends mid-sequence (F0 9F 98) -> 1007', (ctx) =>
    failsWith(ctx, fragments([json('x'), bytes(0xf0, 0x9f), bytes(0x98)]), 1007));

const VALID = typed('é€😀');
each(
    Array.from({ length: VALID.length - 1 }, (_, i) => i + 1),
    (k) => `{"type":"é€😀"} split into 2 fragments after byte ${k} of ${VALID.length} -> accepted`,
    async (ctx, k) => {
        const c = await ctx.open();
        await c.write(fragments([VALID.subarray(0, k), VALID.subarray(k)]));
        await expectUnknownType(c, 'é€😀');
    },
);
t('{"type":"😀"} with each byte of the 4-byte sequence in its own fragment -> accepted', async (ctx) => {
    const c = await ctx.open();
    const raw = Buffer.from('😀');
    const parts = [B('{"type":"', raw.subarray(0, 1)), raw.subarray(1, 2), raw.subarray(2, 3), B(raw.subarray(3), '"}')];
    await c.write(fragments(parts));
    await expectUnknownType(c, '😀');
});
t('U+FFFF and U+10FFFF (EF BF BF, F4 8F BF BF) are valid -> accepted', async (ctx) => {
    const c = await ctx.open();
    await c.write(text(typed(bytes(0xef, 0xbf, 0xbf, 0xf4, 0x8f, 0xbf, 0xbf))));
    await expectUnknownType(c, '\uffff\u{10ffff}');
});
t('binary message with invalid UTF-8 is not checked (no 1007)', async (ctx) => {
    const c = await ctx.open();
    await c.write(frame({ opcode: OP.BINARY, payload: bytes(0xff, 0xc0, 0x80) }));
    const m = await c.nextJson();
    assert(m.type === 'error', `expected an error envelope, got ${JSON.stringify(m)}`);
    await expectAcceptedSilently(c);
});

stillServing();

// ---- 6. close handling (RFC 6455 5.5.1, 7.1-7.4) -------------------------------------

group('close handling');

const VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999];
const INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535];

each(VALID_CODES, (code) => `close ${code} -> echoed, TCP closed`, async (ctx, code) => {
    const c = await ctx.open();
    await c.write(closeFrame(code, 'bye'));
    await expectCloseThenEnd(c, code);
});

t('empty close -> close 1000 or empty close, TCP closed', async (ctx) => {
    const c = await ctx.open();
    await c.write(closeFrame(null));
    await expectCloseThenEnd(c, [1000, null]);
});

each(INVALID_CODES, (code) => `close with invalid code ${code} -> 1002`, (ctx, code) =>
    failsWith(ctx, closeFrame(code), 1002));

t('close with a 1-byte payload -> 1002', (ctx) => failsWith(ctx, frame({ opcode: OP.CLOSE, payload: bytes(0x03) }), 1002));
t('close reason with invalid UTF-8 -> 1007', (ctx) => failsWith(ctx, closeFrame(1000, bytes(0x61, 0xff, 0x62)), 1007));
t('close reason of 123 bytes of valid multibyte UTF-8 -> echoed', async (ctx) => {
    const c = await ctx.open();
    const reason = Buffer.from('é'.repeat(61) + 'x'); // 123 bytes: the largest a close can carry
    await c.write(closeFrame(1000, reason));
    await expectCloseThenEnd(c, 1000);
});
t('close between two fragments of a message -> echoed, TCP closed', async (ctx) => {
    const c = await ctx.open();
    await c.write(B(text('{"type":', { fin: false }), closeFrame(1000)));
    await expectCloseThenEnd(c, 1000);
});
t('after answering a close, nothing else is sent (ping and text behind the close ignored)', async (ctx) => {
    const c = await ctx.open();
    await c.write(B(closeFrame(1000), ping('late'), text(json('x'))));
    await expectCloseThenEnd(c, 1000);
});
t('after a close 1002, nothing else is sent (ping and text behind the bad frame ignored)', async (ctx) => {
    const c = await ctx.open();
    await c.write(B(frame({ opcode: OP.TEXT, payload: json('x'), mask: false }), ping('late'), text(json('y'))));
    await expectCloseThenEnd(c, 1002);
});
t('server-initiated close answered by the client -> server closes TCP', async (ctx) => {
    const c = await ctx.open();
    await c.write(text(json('x'), { rsv: 4 }));
    const got = await c.expectClose();
    assert(got.code === 1002, `expected close 1002, got ${got.code}`);
    await c.write(closeFrame(1002));
    const end = await c.expectEnd();
    assert(end.frames.length === 0, `after its close the server sent ${describe(end.frames[0])}`);
});

stillServing();

// ---- 7. limits (README --max-message-size; RFC 6455 7.4.1 1009) ----------------------

group('limits');

/** A text message of exactly n bytes: {"type":"x","pad":"aaa..."} */
function sized(n) {
    const head = '{"type":"x","pad":"';
    return Buffer.from(head + 'a'.repeat(n - head.length - 2) + '"}');
}

t(`one frame of ${MAX_MESSAGE + 1} bytes -> 1009`, (ctx) => failsWith(ctx, text(sized(MAX_MESSAGE + 1)), 1009));
t(`fragments summing to ${MAX_MESSAGE + 1} bytes -> 1009`, (ctx) =>
    failsWith(ctx, fragments(split(sized(MAX_MESSAGE + 1), 3)), 1009));
t(`one frame of exactly ${MAX_MESSAGE} bytes -> accepted`, async (ctx) => {
    const c = await ctx.open();
    await c.write(text(sized(MAX_MESSAGE)));
    await expectUnknownType(c, 'x');
});
t(`fragments summing to exactly ${MAX_MESSAGE} bytes -> accepted`, async (ctx) => {
    const c = await ctx.open();
    await c.write(fragments(split(sized(MAX_MESSAGE), 5)));
    await expectUnknownType(c, 'x');
});
t('header announcing 2^63-1 bytes, no payload -> 1009 at once, RSS does not jump', async (ctx) => {
    const c = await ctx.open();
    const before = rssKiB();
    await c.write(frame({ opcode: OP.TEXT, length: (1n << 63n) - 1n, lengthForm: 64 }));
    await expectCloseThenEnd(c, 1009);
    const after = rssKiB();
    assert(after - before < 8192, `VmRSS grew from ${before} kB to ${after} kB`);
});

stillServing();

// ---- 8. shutdown (README "Shutdown") --------------------------------------------------

group('shutdown');

// Run after every other case, in order: the first one sends SIGTERM.
t('SIGTERM: an open client gets closing, then close 1001, then TCP closed', async (ctx) => {
    const c = await ctx.open();
    daemon.termSent = true;
    daemon.proc.kill('SIGTERM');
    const m = await c.nextJson(SHUTDOWN_MS);
    assert(
        m.type === 'closing' && m.data && m.data.code === 1001,
        `expected a closing envelope with code 1001, got ${JSON.stringify(m)}`,
    );
    await expectCloseThenEnd(c, 1001, SHUTDOWN_MS);
});
t('SIGTERM: the daemon exits 0', async () => {
    // A second signal means "exit now" (README): send one only if the case before did not.
    if (alive() && !daemon.termSent) daemon.proc.kill('SIGTERM');
    const { code, signal } = await withTimeout(daemon.exit, SHUTDOWN_MS, 'the daemon to exit after SIGTERM');
    assert(code === 0, `daemon exited with ${code ?? signal}`);
});

// ---- runner ----------------------------------------------------------------------------

async function main() {
    try {
        await startDaemon();
    } catch (e) {
        console.log(`FAIL 0.0 start ${BIN}: ${e.message}`);
        console.log(`0 passed, ${cases.length + 1} failed`);
        process.exitCode = 1;
        return;
    }
    const perGroup = {};
    let passed = 0;
    let failed = 0;
    for (const cs of cases) {
        const ctx = makeCtx();
        let err = null;
        const shutdownCase = cs.group === groupNo;
        if (!alive() && !shutdownCase) {
            err = new Error(`daemon exited (${daemon.proc.exitCode ?? daemon.proc.signalCode})`);
        } else {
            try {
                await withTimeout(Promise.resolve().then(() => cs.fn(ctx)), CASE_MS, 'the case');
            } catch (e) {
                err = e;
            }
            if (!err && !shutdownCase && !alive())
                err = new Error(`daemon exited (${daemon.proc.exitCode ?? daemon.proc.signalCode}) during the case`);
        }
        for (const c of ctx.clients) c.destroy();
        const g = (perGroup[cs.group] ??= { passed: 0, failed: 0 });
        if (err) {
            failed += 1;
            g.failed += 1;
            console.log(`FAIL ${cs.id} ${cs.name}: ${String(err.message).replace(/\s+/g, ' ')}`);
        } else {
            passed += 1;
            g.passed += 1;
            console.log(`ok   ${cs.id} ${cs.name}`);
        }
    }
    if (alive()) daemon.proc.kill('SIGKILL');
    for (const [g, r] of Object.entries(perGroup))
        process.stderr.write(`# ${g} ${groupNames[g]}: ${r.passed} passed, ${r.failed} failed\n`);
    console.log(`${passed} passed, ${failed} failed`);
    process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
    console.log(`FAIL runner: ${e.stack}`);
    console.log('0 passed, 1 failed');
    process.exitCode = 1;
});
