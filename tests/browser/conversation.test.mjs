// The conversation survives a reload (issue #13) in headless Chromium: the demo page keeps
// its position in localStorage and rebuilds the whole conversation from the gateway's replay
// (the person's questions, the earlier runs, a run still in progress whose card then
// continues live), draws nothing twice, shows a second tab the question, and says so when
// part of the conversation is no longer kept (a history too short for it, a restarted
// gateway). The agent here is the test itself, behind --message-webhook, so that "mid-run"
// lasts exactly as long as the test wants. Screenshots go to tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startDaemon, publishOk, uid, waitFor } from '../integration/helpers.mjs';
import { freePort } from '../integration/redis_helpers.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ARTIFACTS = path.join(REPO, 'tests', 'artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PAGES = ['--web-dir', path.join(REPO, 'web'), '--client-dir', path.join(REPO, 'clients', 'js')];

let browser, hook;

/** The agent: a webhook receiver on 127.0.0.1 that records each message the gateway hands on. */
function startHook() {
    const got = [];
    const server = http.createServer((req, res) => {
        let body = '';
        req.on('data', (s) => (body += s));
        req.on('end', () => {
            got.push(JSON.parse(body));
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.end('ok');
        });
    });
    return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, got, url: `http://127.0.0.1:${server.address().port}/hook` })));
}

before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    hook = await startHook();
    browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
});

after(async () => {
    if (browser) await browser.close();
    if (hook) await new Promise((r) => hook.server.close(r));
});

const live = () => {
    const s = document.querySelector('[data-testid="conn-state"]')?.dataset.state;
    return s === 'connected' || s === 'resumed';
};

/** A page of `user` in `context` (tabs of one context share localStorage, as in a browser). */
async function openChat(context, port, user) {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.errors = errors;
    await page.goto(`http://127.0.0.1:${port}/?user_id=${encodeURIComponent(user)}`);
    await page.waitForFunction(live, null, { timeout: 10000 });
    return page;
}

async function send(page, text) {
    await page.fill('[data-testid="message-input"]', text);
    await page.click('[data-testid="send"]');
}

/** Waits for the agent to be handed message number `n` (1-based) of this test. */
async function handed(from, n) {
    await waitFor(() => hook.got.length >= from + n, 8000, `the agent's message #${n}`);
    return hook.got[from + n - 1];
}

/** The conversation as the page shows it, in order: ['you: …', 'run:<status>', 'notice', …]. */
function transcript(page) {
    return page.evaluate(() =>
        [...document.querySelectorAll('#log > *')].map((el) => {
            if (el.classList.contains('user-msg')) return `you: ${el.querySelector('.bubble').textContent}`;
            if (el.dataset.testid === 'run') return `run:${el.dataset.status}`;
            if (el.dataset.testid === 'history-notice') return 'notice';
            return `other: ${el.textContent}`;
        }),
    );
}

const run = (user, id, thread) => ({ user_id: user, run_id: id, thread_id: thread });

test('a reload mid-run rebuilds the conversation (questions, earlier runs, the running run, which then completes live); a second tab shows the question', async () => {
    const d = await startDaemon(['--auth=none', '--message-webhook', hook.url, ...PAGES]);
    const context = await browser.newContext({ viewport: { width: 1000, height: 1100 } });
    const from = hook.got.length;
    const user = uid('conv');
    try {
        const a = await openChat(context, d.port, user);
        await send(a, 'what is 6*7?');
        const m1 = await handed(from, 1);
        assert.equal(m1.user_id, user);
        const r1 = run(user, `r1-${user}`, m1.thread_id);
        await publishOk(d.port, [
            { ...r1, type: 'agent_started', data: { agent: 'test-agent' } },
            { ...r1, type: 'agent_thinking', data: { thought: 'Multiplying. ' } },
            { ...r1, type: 'tool_executing', data: { tool: 'calculator', tool_call_id: 'c1', args: { expression: '6*7' } } },
            { ...r1, type: 'tool_completed', data: { tool: 'calculator', tool_call_id: 'c1', result: { value: 42 } } },
            { ...r1, type: 'agent_completed', data: { result: '6*7 = 42' } },
        ]);
        await a.locator('[data-testid="answer"]', { hasText: '42' }).waitFor({ timeout: 8000 });

        const b = await openChat(context, d.port, user); // the second tab, opened now
        await send(a, 'count the words in this sentence');
        const m2 = await handed(from, 2);
        assert.equal(m2.seq, m1.seq + 6, 'the second question follows the first run in the stream');
        const r2 = run(user, `r2-${user}`, m2.thread_id);
        await publishOk(d.port, [
            { ...r2, type: 'agent_started', data: { agent: 'test-agent' } },
            { ...r2, type: 'agent_thinking', data: { thought: 'Counting the words. ' } },
            { ...r2, type: 'tool_executing', data: { tool: 'word_count', tool_call_id: 'c2', args: { text: 'count the words in this sentence' } } },
        ]);
        await a.waitForSelector('[data-testid="tool"][data-tool-call-id="c2"][data-status="running"]', { timeout: 8000 });
        await b.locator('[data-testid="user-message"]', { hasText: 'count the words' }).waitFor({ timeout: 8000 });
        const expected = ['you: what is 6*7?', 'run:completed', 'you: count the words in this sentence', 'run:running'];
        assert.deepEqual(await transcript(a), expected);
        assert.equal(await a.locator('.user-msg[data-delivery="sent"]').count(), 2, 'both questions came back from the stream');
        await a.screenshot({ path: path.join(ARTIFACTS, 'conversation-before-reload.png'), fullPage: true });

        await a.reload();
        await a.waitForFunction(live, null, { timeout: 10000 });
        await a.waitForSelector('[data-testid="tool"][data-tool-call-id="c2"]', { timeout: 8000 });
        assert.deepEqual(await transcript(a), expected, 'the same conversation, nothing twice, nothing missing');
        assert.match(await a.locator('[data-testid="answer"]').first().innerText(), /6\*7 = 42/);
        assert.equal(await a.locator('[data-testid="run"]').nth(1).locator('[data-testid="tool"]').getAttribute('data-status'), 'running');
        assert.match(await a.locator('[data-testid="thinking"]').nth(1).innerText(), /Counting the words/);
        assert.equal(await a.locator('[data-testid="history-notice"]').count(), 0, 'nothing was lost');
        await a.screenshot({ path: path.join(ARTIFACTS, 'conversation-after-reload.png'), fullPage: true });

        // The run goes on, live, in the card rebuilt from the replay.
        await publishOk(d.port, [
            { ...r2, type: 'tool_completed', data: { tool: 'word_count', tool_call_id: 'c2', result: { words: 6 } } },
            { ...r2, type: 'agent_thinking', data: { thought: 'Done.' } },
            { ...r2, type: 'agent_completed', data: { result: 'Your message has 6 words.' } },
        ]);
        await a.locator('[data-testid="answer"]', { hasText: '6 words' }).waitFor({ timeout: 8000 });
        const done = ['you: what is 6*7?', 'run:completed', 'you: count the words in this sentence', 'run:completed'];
        assert.deepEqual(await transcript(a), done);
        assert.match(await a.locator('[data-testid="thinking"]').nth(1).innerText(), /^Counting the words\. Done\.$/);
        await b.locator('[data-testid="answer"]', { hasText: '6 words' }).waitFor({ timeout: 8000 });
        assert.deepEqual(await transcript(b), done, 'the second tab has the same conversation');
        await b.screenshot({ path: path.join(ARTIFACTS, 'conversation-second-tab.png'), fullPage: true });
        assert.deepEqual(a.errors, []);
        assert.deepEqual(b.errors, []);
    } finally {
        await context.close();
        await d.stop();
    }
});

test('the page says when part of the conversation is no longer kept: history too short, then a restarted gateway', async () => {
    const port = await freePort();
    const args = ['--auth=none', '--message-webhook', hook.url, '--history-size', '4', ...PAGES, '--listen', `127.0.0.1:${port}`];
    let d = await startDaemon(args);
    const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    const user = uid('conv');
    try {
        for (let i = 1; i <= 3; i++) {
            const r = run(user, `r${i}-${user}`);
            await publishOk(d.port, [
                { ...r, type: 'agent_started', data: { agent: 'test-agent' } },
                { ...r, type: 'agent_completed', data: { result: `answer ${i}` } },
            ]);
        }
        // Six events, four kept: the first run is gone, the second and third are rebuilt.
        const page = await openChat(context, port, user);
        await page.locator('[data-testid="answer"]', { hasText: 'answer 3' }).waitFor({ timeout: 8000 });
        assert.deepEqual(await transcript(page), ['notice', 'run:completed', 'run:completed']);
        assert.match(await page.locator('[data-testid="history-notice"]').innerText(), /beginning of this conversation is no longer kept.*2 earlier events/);
        await page.screenshot({ path: path.join(ARTIFACTS, 'conversation-notice.png'), fullPage: true });

        assert.deepEqual(page.errors, []);
        // A restart is a new epoch: the one stored by the last visit no longer matches. (The
        // page is closed meanwhile: an open page would see the restart live, and store the
        // new epoch itself.)
        await page.close();
        await d.stop();
        d = await startDaemon(args);
        const again = await openChat(context, port, user);
        await again.locator('[data-testid="history-notice"]').waitFor({ timeout: 5000 });
        assert.match(await again.locator('[data-testid="history-notice"]').innerText(), /restarted/);
        assert.deepEqual(await transcript(again), ['notice']);
        assert.deepEqual(again.errors, []);
    } finally {
        await context.close();
        await d.stop();
    }
});
