// More helpers for the integration tests of runs, the publisher socket (/v1/agent), slow
// consumers and the chaos test. Built on helpers.mjs (which is not edited here); every wait
// is bounded by a timeout.

import WebSocket from 'ws';
import { HOST, startDaemon, connect, connectRefused, request, withTimeout, RawHttp, RawWs, upgradeRequest } from './helpers.mjs';

/**
 * Starts a daemon like daemonFor, but its one after-hook first ends every client handed to
 * d.own(client) and only then stops the daemon, so that a client that stopped reading
 * cannot hold the daemon's graceful shutdown (and the test) for --shutdown-timeout.
 */
export async function daemonOwning(t, args = [], env = {}) {
    const d = await startDaemon(args, env);
    const clients = [];
    d.own = (c) => {
        clients.push(c);
        return c;
    };
    t.after(async () => {
        dropClients(clients);
        await d.stop();
    });
    return d;
}

/** The JSON of GET /v1/stats (throws unless 200). */
export async function stats(port, { key } = {}) {
    const r = await request(port, '/v1/stats', { key });
    if (r.status !== 200) throw new Error(`GET /v1/stats: HTTP ${r.status} ${r.text}`);
    return r.json;
}

/** GET /v1/runs/{run_id}; resolves {status, headers, text, json}. */
export function getRun(port, runId, { key } = {}) {
    return request(port, `/v1/runs/${encodeURIComponent(runId)}`, { key });
}

/** The `ws` options that put `key` in the handshake's Authorization header. */
const bearer = (key) => (key === undefined ? {} : { headers: { authorization: `Bearer ${key}` } });

/**
 * Opens the publisher socket GET /v1/agent (a WsClient from helpers.mjs: replies come in
 * its inbox, in order). Rejects with Refused on an HTTP refusal.
 */
export function agentSocket(port, { key, timeoutMs = 3000 } = {}) {
    return connect(port, {}, { path: '/v1/agent', waitConnected: false, timeoutMs, wsOptions: bearer(key) });
}

/** Expects the /v1/agent upgrade to be refused; resolves the Refused. */
export function agentSocketRefused(port, { key, timeoutMs = 3000 } = {}) {
    return connectRefused(port, {}, { path: '/v1/agent', timeoutMs, wsOptions: bearer(key) });
}

/**
 * The publisher socket over raw TCP (a RawWs from helpers.mjs), for hand-made frames
 * (fragments); the key goes in the handshake's Authorization header. Rejects unless 101.
 */
export async function rawAgentSocket(port, { key, timeoutMs = 3000 } = {}) {
    const http = await RawHttp.connect(port, timeoutMs);
    const extra = key === undefined ? '' : `Authorization: Bearer ${key}\r\n`;
    await http.write(upgradeRequest('/v1/agent', { extra }));
    let res;
    try {
        res = await http.response(timeoutMs);
    } catch (err) {
        http.destroy();
        throw err;
    }
    if (res.status !== 101) {
        http.destroy();
        throw new Error(`/v1/agent upgrade refused: HTTP ${res.status} ${res.text}`);
    }
    return new RawWs(http, res);
}

/** Sends one frame (object, array or raw string) on an agent socket and awaits its reply. */
export async function agentPublish(agent, body, timeoutMs = 3000) {
    agent.send(body);
    return agent.next(() => true, timeoutMs, `the reply to ${JSON.stringify(body).slice(0, 200)}`);
}

/**
 * A `ws` client to /ws whose messages go to onMessage(msg, ws) from the very first frame
 * (no message can slip past between `connected` and a listener being attached).
 * Resolves {ws, hello} once `connected` arrived; rejects on refusal, error, close or timeout.
 * onClose(code, reason, ws) is called when the connection ends after it was opened.
 */
export function openUserWs(port, query, { onMessage = () => {}, onClose = () => {}, timeoutMs = 3000 } = {}) {
    const qs = new URLSearchParams(query).toString();
    const ws = new WebSocket(`ws://${HOST}:${port}/ws?${qs}`, { handshakeTimeout: timeoutMs });
    let hello = null;
    const ready = new Promise((resolve, reject) => {
        ws.on('message', (data) => {
            let msg;
            try {
                msg = JSON.parse(data.toString());
            } catch {
                msg = { __unparsable: data.toString() };
            }
            if (hello === null) {
                if (msg.type !== 'connected') {
                    reject(new Error(`first message is not connected: ${data.toString().slice(0, 200)}`));
                    ws.terminate();
                    return;
                }
                hello = msg;
                resolve({ ws, hello });
            }
            onMessage(msg, ws);
        });
        ws.once('unexpected-response', (req, res) => {
            reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
            ws.terminate();
        });
        ws.on('error', (err) => reject(err));
        ws.on('close', (code, reason) => {
            if (hello === null) reject(new Error(`closed before connected (code ${code})`));
            else onClose(code, reason.toString(), ws);
        });
    });
    return withTimeout(ready, timeoutMs + 500, `connected on /ws?${qs}`).catch((err) => {
        ws.terminate();
        throw err;
    });
}

/** A pseudo-random generator (mulberry32) so a failing chaos run can be replayed by seed. */
export function rng(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

/** Ends every client now (WebSockets terminated, raw sockets destroyed). */
export function dropClients(clients) {
    for (const c of clients) {
        try {
            if (typeof c.terminate === 'function') c.terminate();
            else c.destroy();
        } catch {
            /* already gone */
        }
    }
}

/** The data each event type needs (tool events for tool call `call`). */
export function dataFor(type, call = 'c1') {
    switch (type) {
        case 'agent_started':
            return { agent: 'planner' };
        case 'agent_thinking':
            return { thought: 'thinking it over' };
        case 'tool_executing':
            return { tool: 'search', tool_call_id: call };
        case 'tool_completed':
            return { tool: 'search', tool_call_id: call, result: { hits: 3 } };
        case 'agent_completed':
            return { result: 'the answer' };
        case 'agent_error':
            return { error: 'the model failed' };
        default:
            return { pct: 50 };
    }
}
