// The demo chat and the dashboard in headless Chromium (Debian's /usr/bin/chromium driven
// by playwright-core): a message becomes a live run shown step by step; a connection cut
// by an operator mid-run is resumed with nothing missing and nothing twice; two tabs of a
// user both show the run; another user sees none of it; the dashboard counts connections.
// Screenshots go to tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startDaemon, connect, request, uid, withTimeout, sleep } from '../integration/helpers.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ARTIFACTS = path.join(REPO, 'tests', 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

let d, browser;

before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    d = await startDaemon(['--auth=none', '--demo', '--web-dir', path.join(REPO, 'web'),
        '--client-dir', path.join(REPO, 'clients', 'js')]);
    browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
        // playwright gives every launch a fresh, empty user-data-dir of its own.
    });
});

after(async () => {
    if (browser) await browser.close();
    if (d) await d.stop();
});

async function openChat(user, viewport = { width: 1100, height: 900 }) {
    const page = await browser.newPage({ viewport });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${d.port}/?user_id=${encodeURIComponent(user)}`);
    await page.waitForFunction(() => {
        const s = document.querySelector('[data-testid="conn-state"]')?.dataset.state;
        return s === 'connected' || s === 'resumed';
    }, null, { timeout: 10000 });
    page.errors = errors;
    return page;
}

async function send(page, text) {
    await page.fill('[data-testid="message-input"]', text);
    await page.click('[data-testid="send"]');
}

const answerOf = (page) => page.locator('[data-testid="run"] [data-testid="answer"]').last();

test('a message becomes a live run: thinking, a tool card from running to done, the answer', async () => {
    const user = uid('b');
    const page = await openChat(user);
    try {
        // Every status the tool card shows, in order, recorded in the page (no timing window).
        await page.evaluate(() => {
            window.toolStatuses = [];
            new MutationObserver((muts) => {
                for (const m of muts) {
                    if (m.target.dataset?.testid === 'tool') window.toolStatuses.push(m.target.dataset.status);
                }
            }).observe(document.getElementById('log'), { subtree: true, attributes: true, attributeFilter: ['data-status'] });
        });
        await send(page, 'what is 6*7?');
        await page.locator('[data-testid="user-message"]', { hasText: 'what is 6*7?' }).waitFor({ timeout: 5000 });
        await page.waitForSelector('[data-testid="tool"][data-status="done"]', { timeout: 8000 });
        // The tool card was shown running before it was done (the demo tool takes 400 ms).
        assert.deepEqual(await page.evaluate(() => window.toolStatuses), ['running', 'done']);
        await answerOf(page).waitFor({ timeout: 8000 });
        assert.match(await answerOf(page).innerText(), /42/);
        const thinking = await page.locator('[data-testid="thinking"]').last().innerText();
        assert.match(thinking, /calculator tool/);
        assert.deepEqual(page.errors, []);
        await page.screenshot({ path: path.join(ARTIFACTS, 'chat.png'), fullPage: true });
        // --demo too: a reload rebuilds the question and its run from the replay, once each.
        await page.reload();
        await page.locator('[data-testid="answer"]', { hasText: '42' }).waitFor({ timeout: 8000 });
        assert.equal(await page.locator('[data-testid="user-message"]', { hasText: 'what is 6*7?' }).count(), 1);
        assert.equal(await page.locator('[data-testid="run"]').count(), 1);
        assert.deepEqual(page.errors, []);
    } finally {
        await page.close();
    }
});

test('an operator cut mid-run (POST /v1/disconnect, 4003): the page resumes and shows every step once', async () => {
    const user = uid('b');
    const ref = await connect(d.port, { user_id: user }); // what the user's stream really holds
    const page = await openChat(user);
    try {
        await send(page, 'please count the words in this sentence right now');
        await page.locator('[data-testid="thinking"]').last().waitFor({ timeout: 8000 });
        const r = await request(d.port, '/v1/disconnect', { method: 'POST', body: JSON.stringify({ user_id: user }) });
        assert.equal(r.status, 200, r.text);
        // The ref client was cut too; the page must come back by itself.
        await page.waitForFunction(() => document.querySelector('[data-testid="conn-state"]')?.dataset.state === 'resumed', null, { timeout: 10000 });
        await answerOf(page).waitFor({ timeout: 10000 });
        assert.match(await answerOf(page).innerText(), /words/);
        // Reference: the user's whole stream, read after the run from history.
        const again = await connect(d.port, { user_id: user, last_seq: 0 });
        await again.next((m) => m.type === 'agent_completed', 5000);
        const thoughts = again.inbox.all.filter((m) => m.type === 'agent_thinking').map((m) => m.data.thought).join('');
        again.ws.close();
        const shown = await page.locator('[data-testid="thinking"]').last().innerText();
        assert.equal(shown.replace(/\s+/g, ' ').trim(), thoughts.replace(/\s+/g, ' ').trim(), 'every thought once, in order');
        assert.equal(await page.locator('[data-testid="tool"][data-status="done"]').count(), 1);
        assert.deepEqual(page.errors, []);
        await page.screenshot({ path: path.join(ARTIFACTS, 'chat-resumed.png'), fullPage: true });
    } finally {
        ref.ws.terminate();
        await page.close();
    }
});

test('two pages of the same user both show the run; another user\'s page shows nothing of it', async () => {
    const user = uid('b');
    const a = await openChat(user);
    const b = await openChat(user, { width: 390, height: 844 }); // a phone-sized screen
    const other = await openChat(uid('other'));
    try {
        await send(a, 'what is 12+30?');
        await answerOf(a).waitFor({ timeout: 10000 });
        await answerOf(b).waitFor({ timeout: 10000 });
        assert.match(await answerOf(b).innerText(), /42/);
        await sleep(300);
        assert.equal(await other.locator('[data-testid="run"]').count(), 0);
        await b.screenshot({ path: path.join(ARTIFACTS, 'chat-phone.png'), fullPage: true });
    } finally {
        await a.close();
        await b.close();
        await other.close();
    }
});

test('the dashboard shows the connection count', async () => {
    const user = uid('b');
    const chat = await openChat(user);
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    try {
        await page.goto(`http://127.0.0.1:${d.port}/dashboard`);
        const stats = JSON.parse((await request(d.port, '/v1/stats')).text);
        await page.waitForFunction((n) => document.querySelector('[data-testid="dash-connections"]')?.textContent.trim() === String(n), stats.total_connections, { timeout: 8000 });
        await sleep(2500); // let the chart draw a few samples
        await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    } finally {
        await page.close();
        await chat.close();
    }
});
