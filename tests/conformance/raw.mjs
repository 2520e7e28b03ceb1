// A raw RFC 6455 client for the conformance suite, on node:net only: the opening handshake
// written by hand, a frame builder that can set any header bit, opcode and announced length
// (so it can build every frame a correct client never would), a parser for server frames
// that also checks the server's own framing, and awaitable reads. Every wait has a timeout,
// so a case can fail but never hang. It never answers anything on its own.

import net from 'node:net';
import crypto from 'node:crypto';

export const HOST = '127.0.0.1';
export const WAIT_MS = 2000;
export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };
const OP_NAME = { 0: 'continuation', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tick = () => new Promise((r) => setImmediate(r));

/** Resolves `p`, or rejects with "timeout after ms ms: what". */
export function withTimeout(p, ms, what) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

// ---- handshake -----------------------------------------------------------------------

/** A random Sec-WebSocket-Key: base64 of 16 random bytes. */
export function newKey() {
    return crypto.randomBytes(16).toString('base64');
}

/** RFC 6455 4.2.2: base64(SHA-1(key || GUID)). */
export function acceptFor(key) {
    return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

/**
 * The bytes of an opening handshake. Every header can be replaced, and a header given as
 * null is left out: { version: null } sends no Sec-WebSocket-Version. `extra` is a list of
 * raw header lines appended as they are.
 */
export function handshakeRequest({
    path = '/ws?user_id=u',
    method = 'GET',
    host = HOST,
    key = newKey(),
    version = '13',
    upgrade = 'websocket',
    connection = 'Upgrade',
    extra = [],
} = {}) {
    const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`];
    if (upgrade !== null) lines.push(`Upgrade: ${upgrade}`);
    if (connection !== null) lines.push(`Connection: ${connection}`);
    if (key !== null) lines.push(`Sec-WebSocket-Key: ${key}`);
    if (version !== null) lines.push(`Sec-WebSocket-Version: ${version}`);
    lines.push(...extra);
    return { bytes: Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), key };
}

// ---- frames ----------------------------------------------------------------------------

/**
 * A client frame. Defaults make a correct masked frame; every field can be bent:
 * - fin (bool), rsv (0-7: RSV1 = 4, RSV2 = 2, RSV3 = 1), opcode (0-15)
 * - mask (bool; false sends the payload in clear), maskKey (4 bytes)
 * - length (number or BigInt): the length announced in the header, whatever payload is
 *   given (so a header can announce 2^63-1 and be sent alone)
 * - lengthForm: 7, 16 or 64 to force an encoding; default the minimal one
 */
export function frame({
    fin = true,
    rsv = 0,
    opcode = OP.TEXT,
    payload = Buffer.alloc(0),
    mask = true,
    maskKey = crypto.randomBytes(4),
    length,
    lengthForm,
} = {}) {
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    const len = BigInt(length ?? body.length);
    const form = lengthForm ?? (len < 126n ? 7 : len <= 0xffffn ? 16 : 64);
    const head = [((fin ? 1 : 0) << 7) | ((rsv & 7) << 4) | (opcode & 0xf)];
    const m = mask ? 0x80 : 0;
    if (form === 7) {
        head.push(m | Number(len & 0x7fn));
    } else if (form === 16) {
        head.push(m | 126, Number((len >> 8n) & 0xffn), Number(len & 0xffn));
    } else {
        head.push(m | 127);
        for (let i = 7; i >= 0; i--) head.push(Number((len >> BigInt(8 * i)) & 0xffn));
    }
    if (!mask) return Buffer.concat([Buffer.from(head), body]);
    const masked = Buffer.alloc(body.length);
    for (let i = 0; i < body.length; i++) masked[i] = body[i] ^ maskKey[i & 3];
    return Buffer.concat([Buffer.from(head), Buffer.from(maskKey), masked]);
}

export const text = (payload, o = {}) => frame({ ...o, opcode: OP.TEXT, payload });
export const cont = (payload, o = {}) => frame({ ...o, opcode: OP.CONT, payload });
export const ping = (payload = '', o = {}) => frame({ ...o, opcode: OP.PING, payload });
export const pong = (payload = '', o = {}) => frame({ ...o, opcode: OP.PONG, payload });

/** A close frame: code (or none when null), then reason (string or Buffer). */
export function closeFrame(code, reason = '', o = {}) {
    if (code === null || code === undefined) return frame({ ...o, opcode: OP.CLOSE });
    const c = Buffer.alloc(2);
    c.writeUInt16BE(code);
    const r = Buffer.isBuffer(reason) ? reason : Buffer.from(reason);
    return frame({ ...o, opcode: OP.CLOSE, payload: Buffer.concat([c, r]) });
}

/** `payload` cut into text frames: the first TEXT, the others CONT, FIN on the last. */
export function fragments(parts, opcode = OP.TEXT) {
    return Buffer.concat(
        parts.map((p, i) =>
            frame({ opcode: i === 0 ? opcode : OP.CONT, fin: i === parts.length - 1, payload: p }),
        ),
    );
}

/** Splits `buf` into `n` pieces of near-equal length (some may be empty when n > length). */
export function split(buf, n) {
    const out = [];
    for (let i = 0; i < n; i++)
        out.push(buf.subarray(Math.floor((i * buf.length) / n), Math.floor(((i + 1) * buf.length) / n)));
    return out;
}

/**
 * Parses one server frame at the start of `buf`: null when incomplete, else
 * { frame, size }. A server frame breaking RFC 6455 (masked: 5.1; RSV bits without an
 * extension: 5.2; a non-minimal length: 5.2; a fragmented or long control frame: 5.5)
 * is reported in frame.violations, not thrown, so the case can name it.
 */
export function parseFrame(buf) {
    if (buf.length < 2) return null;
    const b0 = buf[0];
    const b1 = buf[1];
    const masked = (b1 & 0x80) !== 0;
    let len = BigInt(b1 & 0x7f);
    let pos = 2;
    const violations = [];
    if (len === 126n) {
        if (buf.length < 4) return null;
        len = BigInt(buf.readUInt16BE(2));
        pos = 4;
        if (len < 126n) violations.push('non-minimal 16-bit length');
    } else if (len === 127n) {
        if (buf.length < 10) return null;
        len = buf.readBigUInt64BE(2);
        pos = 10;
        if (len <= 0xffffn) violations.push('non-minimal 64-bit length');
        if (len >> 63n) violations.push('64-bit length with the top bit set');
    }
    let key = null;
    if (masked) {
        if (buf.length < pos + 4) return null;
        key = buf.subarray(pos, pos + 4);
        pos += 4;
        violations.push('server frame is masked');
    }
    if (len > BigInt(64 * 1024 * 1024)) throw new Error(`server frame announces ${len} bytes`);
    const n = Number(len);
    if (buf.length < pos + n) return null;
    let payload = Buffer.from(buf.subarray(pos, pos + n));
    if (key) for (let i = 0; i < n; i++) payload[i] ^= key[i & 3];
    const f = {
        fin: (b0 & 0x80) !== 0,
        rsv: (b0 >> 4) & 7,
        opcode: b0 & 0xf,
        masked,
        payload,
        violations,
    };
    if (f.rsv) violations.push(`RSV bits ${f.rsv} set`);
    if (f.opcode >= 8 && (!f.fin || n > 125)) violations.push('bad control frame');
    if ((f.opcode > 2 && f.opcode < 8) || f.opcode > 10) violations.push(`reserved opcode ${f.opcode}`);
    return { frame: f, size: pos + n };
}

/** A short human description of a server frame, for failure messages. */
export function describe(f) {
    if (f === null || f === undefined) return 'nothing';
    const name = OP_NAME[f.opcode] ?? `opcode ${f.opcode}`;
    if (f.opcode === OP.CLOSE) {
        if (f.payload.length < 2) return `close frame (${f.payload.length}-byte payload)`;
        return `close ${f.payload.readUInt16BE(0)} "${f.payload.subarray(2).toString()}"`;
    }
    let body = f.payload.toString(f.opcode === OP.TEXT ? 'utf8' : 'hex');
    if (body.length > 120) body = body.slice(0, 117) + '...';
    return `${name} frame${f.fin ? '' : ' (FIN=0)'} ${JSON.stringify(body)}`;
}

/** A server text frame that is an app-level ping envelope (sent every --ping-interval). */
function isPingEnvelope(f) {
    if (f.opcode !== OP.TEXT) return false;
    try {
        return JSON.parse(f.payload.toString()).type === 'ping';
    } catch {
        return false;
    }
}

// ---- the client ------------------------------------------------------------------------

export class RawClient {
    /** Connects to 127.0.0.1:port; rejects on error or after ms. */
    static connect(port, ms = WAIT_MS) {
        return withTimeout(
            new Promise((resolve, reject) => {
                const sock = net.connect({ host: HOST, port });
                sock.once('connect', () => {
                    sock.off('error', reject);
                    resolve(new RawClient(sock));
                });
                sock.once('error', reject);
            }),
            ms,
            `connect to ${HOST}:${port}`,
        );
    }

    constructor(sock) {
        this.sock = sock;
        this.buf = Buffer.alloc(0);
        this.mode = 'http'; // 'ws' after a 101
        this.frames = []; // parsed, not yet taken
        this.ended = false; // FIN from the server
        this.closed = false; // socket fully closed
        this.error = null; // e.g. ECONNRESET
        this.waiters = new Set();
        sock.setNoDelay(true);
        sock.on('data', (d) => {
            this.buf = Buffer.concat([this.buf, d]);
            this._parse();
            this._notify();
        });
        sock.on('end', () => {
            this.ended = true;
            this._notify();
        });
        sock.on('error', (e) => {
            this.error = e;
            this._notify();
        });
        sock.on('close', () => {
            this.closed = true;
            this._notify();
        });
    }

    /** True once the server closed its side (FIN), reset, or the socket is gone. */
    get gone() {
        return this.ended || this.closed || this.error !== null;
    }

    _parse() {
        while (this.mode === 'ws') {
            const r = parseFrame(this.buf);
            if (r === null) return;
            this.buf = this.buf.subarray(r.size);
            this.frames.push(r.frame);
        }
    }

    _notify() {
        for (const w of [...this.waiters]) w();
    }

    /** Resolves with the first non-undefined value of check(), re-run on every event. */
    _wait(check, ms, what) {
        return new Promise((resolve, reject) => {
            let timer;
            const run = () => {
                let v;
                try {
                    v = check();
                } catch (e) {
                    this.waiters.delete(run);
                    clearTimeout(timer);
                    reject(e);
                    return;
                }
                if (v !== undefined) {
                    this.waiters.delete(run);
                    clearTimeout(timer);
                    resolve(v);
                }
            };
            timer = setTimeout(() => {
                this.waiters.delete(run);
                reject(new Error(`timeout after ${ms} ms: ${what}`));
            }, ms);
            this.waiters.add(run);
            run();
        });
    }

    /** Writes bytes; resolves when they are handed to the kernel. */
    write(bytes) {
        return new Promise((resolve, reject) => {
            this.sock.write(bytes, (err) => (err ? reject(err) : resolve()));
        });
    }

    /** Writes one byte at a time, yielding to the loop between them. */
    async writeBytewise(bytes) {
        for (let i = 0; i < bytes.length; i++) {
            await this.write(bytes.subarray(i, i + 1));
            await tick();
        }
    }

    /** Writes each buffer separately, pausing `gapMs` between them. */
    async writeEach(buffers, gapMs = 2) {
        for (const b of buffers) {
            await this.write(b);
            await sleep(gapMs);
        }
    }

    /**
     * Reads an HTTP response head (and, when it is not a 101, its Content-Length body).
     * After a 101 the client switches to frames; bytes behind the head are frames.
     */
    async readResponse(ms = WAIT_MS) {
        const headEnd = await this._wait(
            () => {
                const i = this.buf.indexOf('\r\n\r\n');
                if (i >= 0) return i;
                if (this.gone)
                    throw new Error(`TCP closed before an HTTP response (got ${JSON.stringify(this.buf.toString('latin1'))})`);
                return undefined;
            },
            ms,
            'an HTTP response head',
        );
        const head = this.buf.subarray(0, headEnd).toString('latin1');
        this.buf = this.buf.subarray(headEnd + 4);
        const [statusLine, ...lines] = head.split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
        if (!m) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
        const headers = {};
        for (const l of lines) {
            const c = l.indexOf(':');
            if (c <= 0) throw new Error(`bad header line ${JSON.stringify(l)}`);
            const k = l.slice(0, c).trim().toLowerCase();
            const v = l.slice(c + 1).trim();
            headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
        }
        const status = Number(m[1]);
        let body = Buffer.alloc(0);
        if (status === 101) {
            this.mode = 'ws';
            this._parse();
        } else if (headers['content-length'] !== undefined) {
            const n = Number(headers['content-length']);
            await this._wait(
                () => {
                    if (this.buf.length >= n) return true;
                    if (this.gone) throw new Error(`TCP closed inside a ${n}-byte body`);
                    return undefined;
                },
                ms,
                `a ${n}-byte body`,
            );
            body = this.buf.subarray(0, n);
            this.buf = this.buf.subarray(n);
        }
        return { status, reason: m[2] ?? '', headers, head, body: body.toString() };
    }

    /**
     * The next server frame. Server pings (frames and the app's ping envelopes) may come
     * at any time and are skipped unless `all` is set. Throws when the TCP connection ends
     * first, naming what was left over.
     */
    nextFrame(ms = WAIT_MS, { all = false } = {}) {
        return this._wait(
            () => {
                while (this.frames.length > 0) {
                    const f = this.frames.shift();
                    if (!all && (f.opcode === OP.PING || isPingEnvelope(f))) continue;
                    return f;
                }
                if (this.gone) {
                    const left = this.buf.length ? ` (${this.buf.length} stray bytes)` : '';
                    throw new Error(`TCP closed${this.error ? ` (${this.error.code})` : ''} with no frame${left}`);
                }
                return undefined;
            },
            ms,
            'a server frame',
        );
    }

    /** The next frame, which must be a text frame holding JSON; returns the object. */
    async nextJson(ms = WAIT_MS) {
        const f = await this.nextFrame(ms);
        if (f.opcode !== OP.TEXT || !f.fin) throw new Error(`expected a text frame, got ${describe(f)}`);
        const s = new TextDecoder('utf-8', { fatal: true }).decode(f.payload);
        return JSON.parse(s);
    }

    /**
     * The next frame must be a close frame. Returns { code, reason } (code null for an
     * empty close). Checks the server's close payload itself: 0 or >= 2 bytes, UTF-8
     * reason, at most 125 bytes.
     */
    async expectClose(ms = WAIT_MS) {
        let f;
        try {
            f = await this.nextFrame(ms);
        } catch (e) {
            throw new Error(`no close frame: ${e.message}`);
        }
        if (f.opcode !== OP.CLOSE) throw new Error(`got ${describe(f)}`);
        if (f.violations.length) throw new Error(`server close frame breaks RFC 6455: ${f.violations.join(', ')}`);
        if (f.payload.length === 0) return { code: null, reason: '' };
        if (f.payload.length === 1) throw new Error('server close frame has a 1-byte payload');
        const reason = new TextDecoder('utf-8', { fatal: true }).decode(f.payload.subarray(2));
        return { code: f.payload.readUInt16BE(0), reason };
    }

    /**
     * Waits until the server has closed the TCP connection (FIN or reset). Returns the
     * frames and stray bytes that arrived before that and were not taken.
     */
    async expectEnd(ms = WAIT_MS) {
        await this._wait(() => (this.gone ? true : undefined), ms, 'the server to close TCP');
        return { frames: this.frames.splice(0), stray: this.buf.length, error: this.error };
    }

    /** Waits ms; throws when any frame other than a server ping arrived or TCP closed. */
    async expectSilence(ms) {
        await sleep(ms);
        const got = this.frames.filter((f) => f.opcode !== OP.PING && !isPingEnvelope(f));
        if (got.length) throw new Error(`expected nothing, got ${describe(got[0])}`);
        if (this.mode === 'ws' && this.buf.length > 0) throw new Error(`expected nothing, got ${this.buf.length} bytes of a frame`);
        if (this.gone) throw new Error('expected the connection to stay open, TCP closed');
    }

    destroy() {
        this.sock.destroy();
    }
}

// ---- composite helpers -----------------------------------------------------------------

/**
 * Opens a WebSocket with a correct handshake for `user` (auth none), checks the 101 and
 * reads the `connected` envelope, which comes first. Returns the client.
 */
export async function openWs(port, user, ms = WAIT_MS) {
    const c = await RawClient.connect(port, ms);
    try {
        const { bytes, key } = handshakeRequest({ path: `/ws?user_id=${encodeURIComponent(user)}`, host: `${HOST}:${port}` });
        await c.write(bytes);
        const r = await c.readResponse(ms);
        if (r.status !== 101) throw new Error(`handshake: expected 101, got ${r.status} ${r.body}`);
        if (r.headers['sec-websocket-accept'] !== acceptFor(key))
            throw new Error(`handshake: bad Sec-WebSocket-Accept ${r.headers['sec-websocket-accept']}`);
        const m = await c.nextJson(ms);
        if (m.type !== 'connected') throw new Error(`expected connected first, got ${JSON.stringify(m)}`);
        return c;
    } catch (e) {
        c.destroy();
        throw e;
    }
}

/**
 * The server must send a close frame with `code` (a list allows any of them; null means
 * an empty close), send nothing after it, and close TCP. Error messages read
 * "expected close 1002, got ...".
 */
export async function expectCloseThenEnd(c, code, ms = WAIT_MS) {
    const want = Array.isArray(code) ? code : [code];
    const wantStr = want.map((x) => (x === null ? 'empty close' : String(x))).join(' or ');
    let got;
    try {
        got = await c.expectClose(ms);
    } catch (e) {
        throw new Error(`expected close ${wantStr}, ${e.message}`);
    }
    if (!want.includes(got.code))
        throw new Error(`expected close ${wantStr}, got close ${got.code ?? '(empty)'} "${got.reason}"`);
    let end;
    try {
        end = await c.expectEnd(ms);
    } catch (e) {
        throw new Error(`close ${got.code} received, then ${e.message}`);
    }
    // RFC 6455 5.5.1: the close frame is the last thing the server sends.
    const after = end.frames;
    if (after.length) throw new Error(`after the close frame the server sent ${describe(after[0])}`);
    if (end.stray) throw new Error(`after the close frame the server sent ${end.stray} stray bytes`);
    return got;
}
