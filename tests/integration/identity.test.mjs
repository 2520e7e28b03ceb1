// Identity providers: asymmetric JWTs (RS256/384/512, ES256/384, EdDSA) checked against a
// JWKS file or URL, each key pinned to its algorithm; rotation through the URL, a URL that
// is down, the refresh floor, and the classic attacks. Keys are made by the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { daemonFor, connect, connectRefused, closeAfter, publishOk, uid, nowS, makeJwt, waitFor, sleep, assertJsonError } from './helpers.mjs';
import { makeKey, jwkOf, signJwt, noneJwt, jwksServer, tmpDir } from './identity_helpers.mjs';

const ALGS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'EdDSA'];
const keys = Object.fromEntries(ALGS.map((a) => [a, makeKey(a)]));
const claims = (sub, extra = {}) => ({ sub, exp: nowS() + 300, ...extra });

function jwksFile(t, jwks) {
    const dir = tmpDir(t, 'agentcast-jwks-');
    const file = path.join(dir, 'jwks.json');
    fs.writeFileSync(file, JSON.stringify({ keys: jwks }));
    return file;
}

const allJwks = () => ALGS.map((a) => jwkOf(keys[a], `kid-${a}`, a));

test('every algorithm: a token signed by a JWKS file key opens /ws as its sub', async (t) => {
    const d = await daemonFor(t, ['--jwt-jwks-file', jwksFile(t, allJwks())]);
    assert.ok(d.logs.some((l) => /event=jwks_loaded from=file keys=6 skipped=0/.test(l)), d.logs.join('\n'));
    for (const alg of ALGS) {
        const sub = uid(alg);
        const c = closeAfter(t, await connect(d.port, { token: signJwt(keys[alg], alg, claims(sub), { kid: `kid-${alg}` }) }));
        assert.equal(c.hello.user_id, sub, alg);
        await publishOk(d.port, { user_id: sub, type: 'agent_started', data: { agent: alg } });
        const ev = await c.next((m) => m.type === 'agent_started');
        assert.equal(ev.data.agent, alg);
        c.terminate();
    }
});

test('a token without kid is checked against the keys pinned to its alg', async (t) => {
    const d = await daemonFor(t, ['--jwt-jwks-file', jwksFile(t, allJwks())]);
    const sub = uid('nokid');
    const c = closeAfter(t, await connect(d.port, { token: signJwt(keys.ES384, 'ES384', claims(sub)) }));
    assert.equal(c.hello.user_id, sub);
});

test('attacks: alg none, HS256 signed with the RSA public key, alg swapped under a kid', async (t) => {
    const d = await daemonFor(t, ['--jwt-jwks-file', jwksFile(t, allJwks())]);
    let r = await connectRefused(d.port, { token: noneJwt(claims('mallory'), { kid: 'kid-RS256' }) });
    assertJsonError(assert, r, 401, 'token: alg not accepted');
    const pem = keys.RS256.publicKey.export({ type: 'spki', format: 'pem' });
    r = await connectRefused(d.port, { token: makeJwt(claims('mallory'), pem, { alg: 'HS256', kid: 'kid-RS256' }) });
    assertJsonError(assert, r, 401, 'token: alg not accepted');
    r = await connectRefused(d.port, { token: signJwt(keys.RS256, 'RS512', claims('mallory'), { kid: 'kid-RS256' }) });
    assertJsonError(assert, r, 401, 'token: alg does not match the key');
    r = await connectRefused(d.port, { token: signJwt(makeKey('ES256'), 'ES256', claims('mallory'), { kid: 'kid-ES256' }) });
    assertJsonError(assert, r, 401, 'token: bad signature');
});

test('--jwt-secret and a JWKS together: HS256 under the secret only, never under a JWK', async (t) => {
    const d = await daemonFor(t, ['--jwt-secret', 'the-shared-secret', '--jwt-jwks-file', jwksFile(t, allJwks())]);
    const sub = uid('hs');
    const c = closeAfter(t, await connect(d.port, { token: makeJwt(claims(sub), 'the-shared-secret') }));
    assert.equal(c.hello.user_id, sub);
    const pem = keys.RS256.publicKey.export({ type: 'spki', format: 'pem' });
    const r = await connectRefused(d.port, { token: makeJwt(claims('mallory'), pem, { alg: 'HS256', kid: 'kid-RS256' }) });
    assertJsonError(assert, r, 401, 'token: bad signature');
});

test('--jwt-audience, --jwt-issuer, --jwt-leeway: other audience or issuer refused; expiry within the leeway accepted', async (t) => {
    const d = await daemonFor(t, ['--jwt-jwks-file', jwksFile(t, allJwks()), '--jwt-audience', 'agentcast',
        '--jwt-issuer', 'https://idp.test/', '--jwt-leeway', '60']);
    const ok = { aud: 'agentcast', iss: 'https://idp.test/' };
    const tok = (extra) => signJwt(keys.ES256, 'ES256', { sub: 'u-aud', exp: nowS() + 300, ...ok, ...extra }, { kid: 'kid-ES256' });
    const c = closeAfter(t, await connect(d.port, { token: tok({ aud: ['other', 'agentcast'] }) }));
    assert.equal(c.hello.user_id, 'u-aud');
    assertJsonError(assert, await connectRefused(d.port, { token: tok({ aud: 'billing' }) }), 401, 'token: aud does not match --jwt-audience');
    assertJsonError(assert, await connectRefused(d.port, { token: tok({ iss: 'https://evil.test/' }) }), 401, 'token: iss does not match --jwt-issuer');
    const within = closeAfter(t, await connect(d.port, { token: tok({ exp: nowS() - 20 }) }));
    assert.equal(within.hello.user_id, 'u-aud');
    assertJsonError(assert, await connectRefused(d.port, { token: tok({ exp: nowS() - 600 }) }), 401, 'token: expired');
});

test('--jwt-user-claim names the claim that is the user', async (t) => {
    const d = await daemonFor(t, ['--jwt-jwks-file', jwksFile(t, allJwks()), '--jwt-user-claim', 'email']);
    const c = closeAfter(t, await connect(d.port, { token: signJwt(keys.EdDSA, 'EdDSA', { sub: 'x', email: 'ann@example.com', exp: nowS() + 60 }, { kid: 'kid-EdDSA' }) }));
    assert.equal(c.hello.user_id, 'ann@example.com');
    const r = await connectRefused(d.port, { token: signJwt(keys.EdDSA, 'EdDSA', claims('x'), { kid: 'kid-EdDSA' }) });
    assertJsonError(assert, r, 401, 'token: user claim (--jwt-user-claim) required');
});

test('a JWKS file that does not load stops the daemon at start with the reason', async (t) => {
    const file = jwksFile(t, [{ kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' }]);
    await assert.rejects(daemonFor(t, ['--jwt-jwks-file', file]), /no usable signing key/);
});

test('rotation: a token with a new kid makes the gateway fetch the JWKS URL again and is accepted', async (t) => {
    const k1 = makeKey('ES256');
    const k2 = makeKey('ES256');
    const s = await jwksServer([jwkOf(k1, 'k1', 'ES256')]);
    t.after(() => s.close());
    const d = await daemonFor(t, ['--jwt-jwks-url', s.url, '--jwt-jwks-min-refresh', '0.1']);
    const a = closeAfter(t, await connect(d.port, { token: signJwt(k1, 'ES256', claims('rot-1'), { kid: 'k1' }) }));
    assert.equal(a.hello.user_id, 'rot-1');
    assert.equal(s.fetches, 1);
    s.keys = [jwkOf(k1, 'k1', 'ES256'), jwkOf(k2, 'k2', 'ES256')];
    await sleep(300); // past the floor since the first fetch
    const b = closeAfter(t, await connect(d.port, { token: signJwt(k2, 'ES256', claims('rot-2'), { kid: 'k2' }) }));
    assert.equal(b.hello.user_id, 'rot-2');
    assert.equal(s.fetches, 2);
    // The first connection was never disturbed.
    await publishOk(d.port, { user_id: 'rot-1', type: 'agent_started', data: { agent: 'a' } });
    assert.equal((await a.next((m) => m.type === 'agent_started')).user_id, 'rot-1');
});

test('the refresh floor: tokens naming made-up kids do not make the gateway fetch again', async (t) => {
    const k1 = makeKey('ES256');
    const s = await jwksServer([jwkOf(k1, 'k1', 'ES256')]);
    t.after(() => s.close());
    const d = await daemonFor(t, ['--jwt-jwks-url', s.url, '--jwt-jwks-min-refresh', '3600']);
    closeAfter(t, await connect(d.port, { token: signJwt(k1, 'ES256', claims('floor'), { kid: 'k1' }) }));
    for (let i = 0; i < 5; i++) {
        const r = await connectRefused(d.port, { token: signJwt(k1, 'ES256', claims('floor'), { kid: `made-up-${i}` }) });
        assertJsonError(assert, r, 401, 'token: no key for this kid or alg');
    }
    assert.equal(s.fetches, 1);
});

test('a JWKS URL that is down at refresh: the last good keys are kept', async (t) => {
    const k1 = makeKey('RS256');
    const s = await jwksServer([jwkOf(k1, 'k1', 'RS256')]);
    t.after(() => s.close());
    const d = await daemonFor(t, ['--jwt-jwks-url', s.url, '--jwt-jwks-refresh', '0.2', '--jwt-jwks-min-refresh', '0.1']);
    closeAfter(t, await connect(d.port, { token: signJwt(k1, 'RS256', claims('down-1'), { kid: 'k1' }) }));
    s.down = true;
    const before = s.fetches;
    await waitFor(() => s.fetches >= before + 2 && d.logs.some((l) => /event=jwks_fetch_failed keys_kept=1/.test(l)), 10000, 'failed refreshes');
    const c = closeAfter(t, await connect(d.port, { token: signJwt(k1, 'RS256', claims('down-2'), { kid: 'k1' }) }));
    assert.equal(c.hello.user_id, 'down-2');
});

test('a JWKS URL down at start: 503 with Retry-After until the keys load, then accepted', async (t) => {
    const k1 = makeKey('EdDSA');
    const s = await jwksServer([jwkOf(k1, 'k1', 'EdDSA')]);
    s.down = true;
    t.after(() => s.close());
    const d = await daemonFor(t, ['--jwt-jwks-url', s.url, '--jwt-jwks-min-refresh', '0.1']);
    await waitFor(() => d.logs.some((l) => /event=jwks_fetch_failed keys_kept=0/.test(l)), 10000, 'the first fetch failing');
    const token = signJwt(k1, 'EdDSA', claims('late'), { kid: 'k1' });
    const r = await connectRefused(d.port, { token });
    assertJsonError(assert, r, 503, /signing keys unavailable/);
    assert.ok(r.headers['retry-after']);
    s.down = false;
    const c = await waitFor(async () => connect(d.port, { token }).catch(() => null), 10000, 'connect once the keys load');
    closeAfter(t, c);
    assert.equal(c.hello.user_id, 'late');
});
