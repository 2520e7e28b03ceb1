// Helpers for the identity tests: signing keys made here (Node's crypto, i.e. OpenSSL),
// exported as JWKs, tokens signed with them, a JWKS served over HTTP whose keys and health
// the test changes, and a test CA with a server certificate (the openssl command).

import crypto from 'node:crypto';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** The key for each JWS alg, made here. */
export function makeKey(alg) {
    switch (alg) {
        case 'RS256':
        case 'RS384':
        case 'RS512':
            return crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
        case 'ES256':
            return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        case 'ES384':
            return crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
        case 'EdDSA':
            return crypto.generateKeyPairSync('ed25519');
        default:
            throw new Error(`no key for ${alg}`);
    }
}

/** The public JWK of a key pair, with kid and alg. */
export function jwkOf(pair, kid, alg) {
    return { ...pair.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

/** A compact JWS signed by `pair` as `alg`. */
export function signJwt(pair, alg, payload, header = {}) {
    const h = b64url(JSON.stringify({ alg, typ: 'JWT', ...header }));
    const p = b64url(JSON.stringify(payload));
    const data = Buffer.from(`${h}.${p}`);
    let sig;
    if (alg === 'EdDSA') sig = crypto.sign(null, data, pair.privateKey);
    else if (alg.startsWith('ES')) sig = crypto.sign(`sha${alg.slice(2)}`, data, { key: pair.privateKey, dsaEncoding: 'ieee-p1363' });
    else sig = crypto.sign(`sha${alg.slice(2)}`, data, pair.privateKey);
    return `${h}.${p}.${b64url(sig)}`;
}

/** An unsigned token (alg none). */
export function noneJwt(payload, header = {}) {
    return `${b64url(JSON.stringify({ alg: 'none', ...header }))}.${b64url(JSON.stringify(payload))}.`;
}

/** A JWKS served on 127.0.0.1: set keys with .keys = [...], .down = true answers 500. */
export async function jwksServer(keys) {
    const s = { keys, down: false, fetches: 0 };
    s.server = http.createServer((req, res) => {
        s.fetches += 1;
        if (s.down) {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end('down');
            return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keys: s.keys }));
    });
    await new Promise((resolve) => s.server.listen(0, '127.0.0.1', resolve));
    s.url = `http://127.0.0.1:${s.server.address().port}/.well-known/jwks.json`;
    s.close = () => new Promise((resolve) => { s.server.closeAllConnections(); s.server.close(resolve); });
    return s;
}

/** A temporary folder removed after the test. */
export function tmpDir(t, prefix) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
}

/**
 * A test CA and a certificate for 127.0.0.1 signed by it, made with the openssl command.
 * Returns the file paths {ca, cert, key}.
 */
export function makeCa(dir, name = 'srv') {
    const ca = path.join(dir, 'ca.pem');
    const caKey = path.join(dir, 'ca.key');
    if (!fs.existsSync(ca)) {
        execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
            '-keyout', caKey, '-out', ca, '-days', '1', '-subj', '/CN=agentcast test CA',
            '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], { stdio: 'ignore' });
    }
    const key = path.join(dir, `${name}.key`);
    const csr = path.join(dir, `${name}.csr`);
    const cert = path.join(dir, `${name}.pem`);
    const ext = path.join(dir, `${name}.ext`);
    fs.writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
    execFileSync('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', key, '-out', csr, '-subj', `/CN=${name}`], { stdio: 'ignore' });
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial',
        '-out', cert, '-days', '1', '-extfile', ext], { stdio: 'ignore' });
    return { ca, cert, key };
}
