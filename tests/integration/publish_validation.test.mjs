// POST /v1/publish input rules: every 400 names the field and the rule, every error body
// is JSON; rejected publishes deliver nothing and use no seq; the size limit (413).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
    startDaemon,
    daemonFor,
    connect,
    closeAfter,
    publish,
    publishOk,
    settleUnexpected,
    assertJsonError,
    rawRequest,
    uid,
    CRITICAL,
    REQUIRED_FIELDS,
    RESERVED_TYPES,
} from './helpers.mjs';

let d;
before(async () => {
    d = await startDaemon(['--auth', 'none']);
});
after(async () => {
    await d?.stop();
});

const ev = (extra = {}) => ({ user_id: uid(), type: 'note', data: {}, ...extra });

test('publish with invalid JSON is 400', async () => {
    for (const body of ['{', '{"user_id": "u", "type": }', 'not json', '{"a":1}x']) {
        const r = await publish(d.port, body);
        assertJsonError(assert, r, 400, undefined);
    }
});

test('publish with an empty body is 400', async () => {
    assertJsonError(assert, await publish(d.port, ''), 400);
});

test('publish of a JSON value that is neither object nor array is 400', async () => {
    for (const body of ['42', '"str"', 'null', 'true']) {
        assertJsonError(assert, await publish(d.port, body), 400);
    }
});

test('publish without user_id is 400 user_id: required', async () => {
    const r = await publish(d.port, { type: 'note', data: {} });
    assertJsonError(assert, r, 400, 'user_id: required');
});

test('publish with a non-string user_id is 400 user_id: must be a string', async () => {
    const r = await publish(d.port, { user_id: 42, type: 'note', data: {} });
    assertJsonError(assert, r, 400, 'user_id: must be a string');
});

test('publish with an empty user_id is 400 naming user_id', async () => {
    const r = await publish(d.port, { user_id: '', type: 'note', data: {} });
    assertJsonError(assert, r, 400, /^user_id: /);
});

test('publish without type is 400 type: required', async () => {
    const r = await publish(d.port, { user_id: uid(), data: {} });
    assertJsonError(assert, r, 400, 'type: required');
});

// The contract's error is "<field>: <rule>"; the daemon may explain the rule after it
// (e.g. "type: malformed (must match ...)"), so these match the field and rule as a prefix.
const RESERVED_ERR = /^type: reserved\b/;
const MALFORMED_ERR = /^type: malformed\b/;

test('publish of a reserved type (ping) is 400 type: reserved', async () => {
    const r = await publish(d.port, ev({ type: 'ping' }));
    assertJsonError(assert, r, 400, RESERVED_ERR);
});

test('publish of every reserved type is 400 type: reserved', async () => {
    for (const type of RESERVED_TYPES) {
        assertJsonError(assert, await publish(d.port, ev({ type })), 400, RESERVED_ERR);
    }
});

test('a custom type that is not in the reserved list (pong) is accepted', async () => {
    const r = await publish(d.port, ev({ type: 'pong' }));
    assert.equal(r.status, 200, `reserved types are ${RESERVED_TYPES.join(', ')}: ${r.text}`);
});

test('publish of a malformed type ("Bad Type") is 400 type: malformed', async () => {
    const r = await publish(d.port, ev({ type: 'Bad Type' }));
    assertJsonError(assert, r, 400, MALFORMED_ERR);
});

test('publish of other malformed types is 400 type: malformed', async () => {
    for (const type of ['Agent_started', '1abc', '_x', 'a b', 'a/b', 'a'.repeat(65), 'é']) {
        assertJsonError(assert, await publish(d.port, ev({ type })), 400, MALFORMED_ERR);
    }
});

test('a custom type of 64 characters using [a-z0-9_.-] is accepted', async () => {
    const type = `a${'b0_.-'.repeat(12)}xyz`;
    assert.equal(type.length, 64);
    const r = await publish(d.port, ev({ type }));
    assert.equal(r.status, 200, r.text);
});

test('publish with a non-string type is 400 type: must be a string', async () => {
    const r = await publish(d.port, ev({ type: 7 }));
    assertJsonError(assert, r, 400, 'type: must be a string');
});

for (const [type, fields] of Object.entries(REQUIRED_FIELDS)) {
    const full = type === 'agent_error' ? { error: 'boom' } : CRITICAL[type];
    for (const field of fields) {
        test(`${type} without data.${field} is 400 data.${field}: required for ${type}`, async () => {
            const data = { ...full };
            delete data[field];
            const r = await publish(d.port, ev({ type, data }));
            assertJsonError(assert, r, 400, `data.${field}: required for ${type}`);
        });
    }
    test(`${type} with all its required data fields is accepted`, async () => {
        const r = await publish(d.port, ev({ type, data: full }));
        assert.equal(r.status, 200, r.text);
    });
}

test('a critical event with no data at all is 400 naming its first required field', async () => {
    const r = await publish(d.port, { user_id: uid(), type: 'agent_started' });
    assertJsonError(assert, r, 400, 'data.agent: required for agent_started');
});

test('publish with data that is not an object is 400 data: must be an object', async () => {
    for (const data of ['text', [1, 2], 5, true]) {
        const r = await publish(d.port, ev({ data }));
        assertJsonError(assert, r, 400, 'data: must be an object');
    }
});

for (const field of ['run_id', 'thread_id', 'connection_id', 'idempotency_key']) {
    test(`publish with a non-string ${field} is 400 ${field}: must be a string`, async () => {
        const r = await publish(d.port, ev({ [field]: 12 }));
        assertJsonError(assert, r, 400, `${field}: must be a string`);
    });
}

test('publish with a string idempotency_key (a documented field) is accepted', async () => {
    const r = await publish(d.port, ev({ idempotency_key: uid('idem') }));
    assert.equal(r.status, 200, r.text);
});

test('publish with an unknown field is 400 <field>: unknown field', async () => {
    const r = await publish(d.port, ev({ colour: 'red' }));
    assertJsonError(assert, r, 400, 'colour: unknown field');
});

test('publish of an array with a non-object item is 400 with its index', async () => {
    const r = await publish(d.port, [ev(), 'oops']);
    assertJsonError(assert, r, 400);
    assert.equal(r.json.index, 1);
});

test('rejected publishes deliver nothing and use no seq; the daemon keeps serving', async (t) => {
    const user = uid();
    const c = closeAfter(t, await connect(d.port, { user_id: user }));
    const bad = [
        '{',
        { user_id: user },
        { user_id: user, type: 'ping' },
        { user_id: user, type: 'Bad Type' },
        { user_id: user, type: 'agent_started', data: {} },
        { user_id: user, type: 'note', data: 'x' },
        { user_id: user, type: 'note', extra: 1 },
        [{ user_id: user, type: 'note' }, { user_id: user, type: 'closing' }],
    ];
    for (const b of bad) {
        const r = await publish(d.port, b);
        assert.equal(r.status, 400, `${JSON.stringify(b)} -> ${r.status} ${r.text}`);
    }
    assert.deepEqual(await settleUnexpected(c, 200), []);
    const ok = await publishOk(d.port, { user_id: user, type: 'note', data: { ok: true } });
    assert.deepEqual(ok, { seq: 1, delivered: 1 });
    const got = await c.nextEvent();
    assert.deepEqual([got.type, got.seq, got.data], ['note', 1, { ok: true }]);
});

test('a body over --max-publish-size is 413 with a JSON error', async (t) => {
    const small = await daemonFor(t, ['--auth', 'none', '--max-publish-size', '1024']);
    const body = JSON.stringify({ user_id: uid(), type: 'agent_thinking', data: { thought: 'x'.repeat(2000) } });
    const r = await publish(small.port, body);
    assertJsonError(assert, r, 413);
});

test('a body of exactly --max-publish-size bytes is accepted', async (t) => {
    const small = await daemonFor(t, ['--auth', 'none', '--max-publish-size', '1024']);
    const user = uid();
    const skeleton = JSON.stringify({ user_id: user, type: 'agent_thinking', data: { thought: '' } });
    const body = JSON.stringify({ user_id: user, type: 'agent_thinking', data: { thought: 'y'.repeat(1024 - skeleton.length) } });
    assert.equal(Buffer.byteLength(body), 1024);
    const r = await publish(small.port, body);
    assert.equal(r.status, 200, r.text);
    const over = body.replace('"}}', 'y"}}');
    assert.equal(Buffer.byteLength(over), 1025);
    assertJsonError(assert, await publish(small.port, over), 413);
});

test('a raw request announcing a body over --max-publish-size is 413 before the body is sent', async (t) => {
    const small = await daemonFor(t, ['--auth', 'none', '--max-publish-size', '1024']);
    const res = await rawRequest(
        small.port,
        'POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"user_id":',
    );
    assertJsonError(assert, res, 413);
});

test('the daemon still serves after a 413', async (t) => {
    const small = await daemonFor(t, ['--auth', 'none', '--max-publish-size', '1024']);
    const user = uid();
    const c = closeAfter(t, await connect(small.port, { user_id: user }));
    assert.equal((await publish(small.port, 'x'.repeat(5000))).status, 413);
    const ok = await publishOk(small.port, { user_id: user, type: 'note', data: {} });
    assert.deepEqual(ok, { seq: 1, delivered: 1 });
    assert.equal((await c.nextEvent()).type, 'note');
});

test('deeply nested data (5000 levels) is refused or accepted, and the daemon keeps serving', async (t) => {
    const nested = `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`;
    const body = `{"user_id":"${uid()}","type":"note","data":${nested}}`;
    const r = await publish(d.port, body);
    assert.ok(r.status === 200 || r.status === 400, `status ${r.status}`);
    if (r.status === 400) assertJsonError(assert, r, 400);
    const ok = await publish(d.port, ev());
    assert.equal(ok.status, 200, 'still serving');
});
