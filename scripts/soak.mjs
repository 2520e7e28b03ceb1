#!/usr/bin/env node
// make soak: a bounded soak run of the real daemon (SOAK_SECONDS, default 600) on 127.0.0.1.
// Steady traffic, with at once: connections that churn (close and resume with last_seq +
// epoch), bursts (one publish of ~10 x --max-queue-bytes for one user), slow clients that
// stop reading for a while (some past --slow-timeout: closed 4008, then they resume) and
// pipelined publishes on /v1/agent. Every logical client checks that what it receives,
// across all its reconnects, is exactly 1, 2, 3, ... of its user's stream: a gap is `lost`,
// a repeat `duplicated`, an event of another user `misrouted`. Samples the daemon's RSS and
// queued bytes every second into bench/soak/<stamp>.csv, draws them (SVG, and a PNG through
// headless Chromium when it is there) and prints a summary. Exits 1 when anything was lost,
// duplicated or misrouted, or when the daemon died.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from '../tests/node_modules/ws/index.js';
import { startDaemon, publish, sleep } from '../tests/integration/helpers.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = Number(process.env.SOAK_SECONDS || 600);
const USERS = Number(process.env.SOAK_USERS || 40);
const CAP = 65536;
const SLOW_TIMEOUT = 2;
const OUT = path.join(REPO, 'bench', 'soak');

let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
const pick = (a) => a[Math.floor(rnd() * a.length)];
const users = Array.from({ length: USERS }, (_, i) => `soak-${i}`);
const published = new Map(users.map((u) => [u, 0])); // newest seq acknowledged per user
const totals = { lost: 0, duplicated: 0, misrouted: 0, resyncs: 0, closes4008: 0, reconnects: 0, received: 0, published: 0 };

/** A logical client of `user`: one connection at a time, each resuming where the last stopped. */
class Tracker {
    constructor(port, user, { slow = false } = {}) {
        Object.assign(this, { port, user, slow, last: null, epoch: null, ws: null, stopped: false });
    }
    connect() {
        if (this.stopped) return;
        const q = new URLSearchParams({ user_id: this.user });
        if (this.last !== null) {
            q.set('last_seq', String(this.last));
            q.set('epoch', this.epoch);
            totals.reconnects++;
        }
        const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws?${q}`);
        this.ws = ws;
        ws.on('message', (buf) => this.onMessage(JSON.parse(buf.toString())));
        ws.on('close', (code) => {
            if (code === 4008) totals.closes4008++;
            if (this.ws === ws) this.ws = null;
            if (!this.stopped) setTimeout(() => this.connect(), 20 + rnd() * 200);
        });
        ws.on('error', () => {});
    }
    onMessage(m) {
        if (m.type === 'connected') {
            if (this.epoch !== null && m.data.epoch !== this.epoch) totals.lost++; // a new stream
            this.epoch = m.data.epoch;
            if (this.last === null) this.last = m.data.last_seq;
            return;
        }
        if (m.type === 'resync') {
            totals.resyncs++;
            totals.lost += m.data.from_seq - 1 - this.last;
            this.last = m.data.from_seq - 1;
            return;
        }
        if (m.seq === undefined) return; // ping, closing
        if (m.user_id !== this.user) {
            totals.misrouted++;
            return;
        }
        totals.received++;
        if (m.seq <= this.last) totals.duplicated++;
        else {
            if (m.seq > this.last + 1) totals.lost += m.seq - this.last - 1;
            this.last = m.seq;
        }
    }
    /** Churn: close (the next connection resumes). */
    churn() {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    }
    /** Stop reading for `ms` (past --slow-timeout under load the daemon closes it 4008). */
    stall(ms) {
        const sock = this.ws && this.ws._socket;
        if (!sock) return;
        sock.pause();
        setTimeout(() => sock.resume(), ms);
    }
    stop() {
        this.stopped = true;
        if (this.ws) this.ws.close(1000);
    }
}

function body(user, n, size) {
    const pad = 'p'.repeat(size);
    return Array.from({ length: n }, (_, i) => ({ user_id: user, type: 'chunk', data: { i, pad } }));
}

async function publishBatch(port, user, n, size) {
    const r = await publish(port, body(user, n, size), { timeoutMs: 10000 });
    if (r.status !== 200) throw new Error(`publish: HTTP ${r.status} ${r.text}`);
    const last = r.json[r.json.length - 1].seq;
    published.set(user, Math.max(published.get(user), last));
    totals.published += n;
}

/** /v1/agent: `n` publishes written without waiting, then their replies. */
function agentBurst(port, user, n, size) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/agent`);
        let got = 0;
        ws.on('open', () => {
            for (const ev of body(user, n, size)) ws.send(JSON.stringify(ev));
        });
        ws.on('message', (buf) => {
            const r = JSON.parse(buf.toString());
            if (r.seq === undefined) return reject(new Error(`agent reply: ${buf}`));
            published.set(user, Math.max(published.get(user), r.seq));
            totals.published++;
            if (++got === n) {
                ws.close();
                resolve();
            }
        });
        ws.on('error', reject);
    });
}

const rssKiB = (pid) => Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);

function svgChart(samples) {
    const W = 900, H = 420, L = 70, R = 70, T = 40, B = 50;
    const maxT = Math.max(1, samples[samples.length - 1].t);
    const maxRss = Math.max(...samples.map((s) => s.rssKiB)) * 1.1 / 1024;
    const maxQ = Math.max(1, ...samples.map((s) => s.queuedBytes)) * 1.1 / 1024;
    const x = (t) => L + (t / maxT) * (W - L - R);
    const y1 = (v) => T + (1 - v / maxRss) * (H - T - B);
    const y2 = (v) => T + (1 - v / maxQ) * (H - T - B);
    const line = (f, color) =>
        `<polyline fill="none" stroke="${color}" stroke-width="2" points="${samples.map((s) => `${x(s.t).toFixed(1)},${f(s).toFixed(1)}`).join(' ')}"/>`;
    const ticks = [0, 0.25, 0.5, 0.75, 1];
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">agentcastd soak: RSS and queued bytes over ${Math.round(maxT)} s</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>
<line x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}" stroke="#333"/>
${ticks.map((f) => `<text x="${L - 6}" y="${y1(f * maxRss) + 4}" text-anchor="end" fill="#1f6feb">${(f * maxRss).toFixed(1)}</text>`).join('')}
${ticks.map((f) => `<text x="${W - R + 6}" y="${y2(f * maxQ) + 4}" fill="#d9480f">${(f * maxQ).toFixed(0)}</text>`).join('')}
${ticks.map((f) => `<text x="${x(f * maxT)}" y="${H - B + 18}" text-anchor="middle">${Math.round(f * maxT)} s</text>`).join('')}
<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle" fill="#1f6feb">RSS (MiB)</text>
<text x="${W - 14}" y="${H / 2}" transform="rotate(90 ${W - 14} ${H / 2})" text-anchor="middle" fill="#d9480f">queued (KiB)</text>
${line((s) => y1(s.rssKiB / 1024), '#1f6feb')}
${line((s) => y2(s.queuedBytes / 1024), '#d9480f')}
</svg>`;
}

async function main() {
    fs.mkdirSync(OUT, { recursive: true });
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
    const d = await startDaemon(['--auth', 'none', '--max-queue-bytes', String(CAP), '--slow-timeout', String(SLOW_TIMEOUT),
        '--cleanup-interval', '1', '--history-size', '2000']);
    const port = d.port;
    const trackers = [];
    for (const u of users) {
        trackers.push(new Tracker(port, u), new Tracker(port, u), new Tracker(port, u, { slow: true }));
    }
    for (const t of trackers) t.connect();
    await sleep(500);

    const samples = [];
    const t0 = Date.now();
    let prevReceived = 0;
    const sampler = setInterval(async () => {
        try {
            const st = await (await fetch(`http://127.0.0.1:${port}/v1/stats`)).json();
            const s = { t: (Date.now() - t0) / 1000, rssKiB: rssKiB(d.proc.pid), queuedBytes: st.queued_bytes,
                connections: st.total_connections, historyBytes: st.history_bytes, received: totals.received - prevReceived, ...totals };
            prevReceived = totals.received;
            samples.push(s);
        } catch {}
    }, 1000);

    const end = t0 + SECONDS * 1000;
    let tick = 0;
    while (Date.now() < end && d.proc.exitCode === null) {
        tick++;
        const jobs = [];
        // Steady traffic: 4 batches of 5 small events per 50 ms tick (~400 events/s).
        for (let k = 0; k < 4; k++) jobs.push(publishBatch(port, pick(users), 5, 200));
        if (tick % 100 === 0) jobs.push(publishBatch(port, pick(users), 64, 10240)); // a 10 x cap burst
        if (tick % 150 === 75) jobs.push(agentBurst(port, pick(users), 500, 1024)); // pipelined
        if (tick % 10 === 0) pick(trackers).churn();
        if (tick % 40 === 0) {
            // A slow client stops reading and a burst comes for its user: a short stall is
            // forgiven; a long one (past --slow-timeout) is closed 4008, then resumes.
            const slow = pick(trackers.filter((t) => t.slow));
            slow.stall(rnd() < 0.5 ? 500 : (SLOW_TIMEOUT + 2) * 1000);
            jobs.push(publishBatch(port, slow.user, 64, 10240));
        }
        await Promise.all(jobs);
        await sleep(50);
    }
    // Quiet: every logical client must catch up with its user's newest seq.
    const caughtUp = () => trackers.every((t) => t.last === published.get(t.user));
    const deadline = Date.now() + 30000;
    while (!caughtUp() && Date.now() < deadline) await sleep(100);
    clearInterval(sampler);
    const behind = trackers.filter((t) => t.last !== published.get(t.user));
    totals.lost += behind.reduce((n, t) => n + (published.get(t.user) - (t.last ?? 0)), 0);
    for (const t of trackers) t.stop();
    const died = d.proc.exitCode !== null;
    await d.stop().catch((e) => console.error(String(e)));

    const csv = ['t_s,rss_kib,queued_bytes,history_bytes,connections,received_per_s,lost,duplicated,misrouted,closes_4008,reconnects',
        ...samples.map((s) => [s.t.toFixed(1), s.rssKiB, s.queuedBytes, s.historyBytes, s.connections, s.received, s.lost, s.duplicated,
            s.misrouted, s.closes4008, s.reconnects].join(','))].join('\n');
    const base = path.join(OUT, stamp);
    fs.writeFileSync(`${base}.csv`, csv + '\n');
    fs.writeFileSync(`${base}.svg`, svgChart(samples));
    try {
        const { chromium } = await import('../tests/node_modules/playwright-core/index.mjs');
        const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
            args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                '--disable-sync', '--no-first-run'] });
        const page = await browser.newPage({ viewport: { width: 900, height: 420 } });
        await page.goto(`file://${base}.svg`);
        await page.screenshot({ path: `${base}.png` });
        await browser.close();
    } catch (e) {
        console.error(`soak: no PNG (${e.message.split('\n')[0]}); the SVG is there`);
    }
    const rss = samples.map((s) => s.rssKiB);
    const q = samples.map((s) => s.queuedBytes);
    const summary = { seconds: SECONDS, users: USERS, trackers: trackers.length, ...totals,
        rss_kib_first: rss[0], rss_kib_max: Math.max(...rss), rss_kib_last: rss[rss.length - 1],
        queued_bytes_max: Math.max(...q), history_bytes_max: Math.max(...samples.map((s) => s.historyBytes)), daemon_died: died, files: `${path.relative(REPO, base)}.{csv,svg,png}` };
    fs.writeFileSync(`${base}.json`, JSON.stringify(summary, null, 2) + '\n');
    console.log(JSON.stringify(summary, null, 2));
    const ok = !died && totals.lost === 0 && totals.duplicated === 0 && totals.misrouted === 0;
    console.log(`soak: ${ok ? 'ok' : 'FAILED'}: ${totals.received} events received, ${totals.lost} lost, ${totals.duplicated} duplicated, ${totals.misrouted} misrouted`);
    process.exit(ok ? 0 : 1);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
