// The demo chat page. One connection through the agentcast client; the conversation is the
// user's event stream: the person's messages (user_message events, which the gateway puts in
// the stream before the agent gets them) and one card per agent run, drawn only from what the
// gateway delivers, so every tab of the user shows the same conversation live. On load the
// page asks for everything the gateway still holds (last_seq=0 in the epoch it last saw, kept
// in localStorage) and rebuilds the conversation from that replay, a run still in progress
// included; when part of it is gone (resync) it says so. A message is drawn when sent and
// confirmed when its user_message comes back. No framework, no build step; every text goes
// in through textContent.
import { connect, readPosition } from '/clients/js/agentcast.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const els = {
  conn: $('conn-state'),
  connText: $('conn-text'),
  reconnect: $('reconnect'),
  main: $('main'),
  log: $('log'),
  empty: $('empty'),
  form: $('composer'),
  input: $('message-input'),
  who: $('who'),
  thread: $('thread'),
};

// ---- identity -------------------------------------------------------------------------

function randomId(prefix) {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// A value kept in web storage, made once; private modes that refuse storage still work.
function kept(storageName, key, make) {
  try {
    const storage = window[storageName];
    let value = storage.getItem(key);
    if (!value) {
      value = make();
      storage.setItem(key, value);
    }
    return value;
  } catch {
    return make();
  }
}

const token = params.get('token') || undefined;
const userId = params.get('user_id') || kept('localStorage', 'agentcast.user_id', () => randomId('u-'));
const threadId =
  params.get('thread_id') || kept('sessionStorage', 'agentcast.thread_id', () => randomId('t-'));
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

// Where the client keeps its position in this user's stream (null where storage is refused).
const storage = (() => {
  try {
    const st = window.localStorage;
    st.getItem('agentcast.probe');
    return st;
  } catch {
    return null;
  }
})();
const positionKey = `agentcast.position:${token ? 'token' : userId}`;

els.who.textContent = token ? 'the token’s user' : userId;
els.thread.textContent = threadId;

// ---- small helpers --------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function icon(name) {
  const paths = {
    check: 'M4 10.5l4 4 8-9',
    error: 'M10 2.5l8.5 15h-17z M10 8v4.5 M10 14.8v.2',
    stop: 'M5 5h10v10h-10z',
  };
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', `icon icon-${name}`);
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('d', paths[name] || '');
  svg.append(path);
  return svg;
}

function spinner() {
  return h('span', { class: 'spinner', 'aria-hidden': 'true' });
}

// Text for any value a publisher may send: strings as they are, common wrappers unwrapped,
// anything else as indented JSON.
function asText(value) {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  for (const k of ['text', 'answer', 'content', 'message', 'error', 'output']) {
    if (typeof value[k] === 'string' && Object.keys(value).length <= 2) return value[k];
  }
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function toMs(t) {
  if (t === undefined || t === null) return NaN;
  if (typeof t === 'number') return t;
  return Date.parse(t);
}

function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function clock(ms = Date.now()) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function nearBottom() {
  const m = els.main;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

function scrollToBottom() {
  els.main.scrollTop = els.main.scrollHeight;
}

// Keeps the view pinned to the newest item only when the reader was already there.
function appendToLog(el, { force = false } = {}) {
  const stick = force || nearBottom();
  els.empty.hidden = true;
  els.log.append(el);
  if (stick) scrollToBottom();
}

function systemNote(text, kind = 'info', testid) {
  const el = h(
    'div',
    { class: `system system-${kind}`, 'data-testid': testid },
    kind === 'warn' ? icon('error') : null,
    h('span', { text })
  );
  appendToLog(el);
  return el;
}

// ---- connection state -----------------------------------------------------------------

const CLOSE_REASONS = {
  1000: 'closed normally',
  1001: 'server shutting down',
  1006: 'connection lost',
  1008: 'too many messages',
  1009: 'message too big',
  1011: 'server error',
  4001: 'opened in too many tabs (this was the oldest)',
  4002: 'idle for too long',
  4003: 'disconnected by an operator',
  4008: 'too slow to keep up',
};

let client = null;

function renderState(s = {}) {
  const state = s.state || (client && client.state) || 'connecting';
  let text;
  let detail = '';
  switch (state) {
    case 'connected':
      text = 'connected';
      break;
    case 'reconnecting': {
      text = `reconnecting (attempt ${s.attempt ?? 1})`;
      const why = s.reason || CLOSE_REASONS[s.code];
      if (why) detail = `Connection dropped: ${why}${s.code ? ` (${s.code})` : ''}.`;
      if (Number.isFinite(s.delayMs)) detail += ` Next try in ${formatDuration(s.delayMs)}.`;
      break;
    }
    case 'resumed': {
      const n = Number(s.missed) || 0;
      if (restoring) {
        // The first connection of this page load: it replayed the conversation.
        restoring = false;
        text = n > 0 ? 'connected — conversation restored' : 'connected';
        if (s.recovered === false) text = 'connected — part of the conversation is no longer kept';
        break;
      }
      text =
        s.recovered === false
          ? 'resumed — some events were no longer kept'
          : `resumed — ${n} missed event${n === 1 ? '' : 's'} recovered`;
      break;
    }
    case 'closed': {
      const why = s.reason || CLOSE_REASONS[s.code] || 'connection closed';
      text = `closed — ${why}${s.code ? ` (${s.code})` : ''}`;
      break;
    }
    default:
      // Each reconnect attempt opens with 'connecting' (attempt >= 1): keep saying which.
      text = s.attempt > 0 ? `reconnecting (attempt ${s.attempt})…` : 'connecting…';
  }
  els.conn.dataset.state = state;
  els.connText.textContent = text;
  els.conn.title = detail.trim() || text;
  els.reconnect.hidden = state !== 'closed';
  if (state === 'closed') {
    const why = CLOSE_REASONS[s.code] || s.reason || 'the connection was closed';
    systemNote(`Disconnected: ${why}. Press Reconnect, or send a message, to continue.`, 'warn');
  }
  if (state === 'connected' || state === 'resumed') {
    if (client && client.userId) els.who.textContent = client.userId;
    if (s.connectionId) myConnections.add(s.connectionId);
    // Queued messages went out with the connection: they wait for their user_message now.
    for (const el of els.log.querySelectorAll('.user-msg[data-delivery="queued"]')) {
      setDelivery(el, 'sending');
    }
  }
}

// ---- run cards ------------------------------------------------------------------------

// run_id -> { el, slots, gen, base, shown, tools: Map, ... }
const cards = new Map();
// Bumped when the run views start over (a new client object, or a resync, which clears the
// client's views): a card then keeps what it showed and adds what the new view brings.
let viewGen = 0;

function thinkingOf(run) {
  // The client concatenates every thought into `thinking`; `thoughts` keeps them one by one.
  if (typeof run.thinking === 'string') return run.thinking;
  return Array.isArray(run.thoughts) ? run.thoughts.map(asText).join('') : '';
}

function toolsOf(run) {
  const t = run.tools;
  if (!t) return [];
  if (t instanceof Map) return [...t.entries()];
  if (Array.isArray(t)) return t.map((x) => [x.tool_call_id, x]);
  return Object.entries(t);
}

function createCard(run) {
  const slots = {
    thinking: h('div', { class: 'slot slot-thinking' }),
    tools: h('ol', { class: 'slot tools', 'aria-label': 'Tool calls' }),
    answer: h('div', { class: 'slot slot-answer' }),
    error: h('div', { class: 'slot slot-error' }),
  };
  const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' });
  const agent = h('span', { class: 'agent-name' });
  const status = h('span', { class: 'run-status' });
  const elapsed = h('span', { class: 'run-elapsed' });
  const threadTag = h('span', { class: 'tag', hidden: true });
  const headId = `run-head-${cards.size + 1}`;
  const el = h(
    'article',
    {
      class: 'run',
      'data-testid': 'run',
      'data-run-id': run.run_id,
      'aria-labelledby': headId,
    },
    h('header', { class: 'run-head', id: headId }, avatar, agent, threadTag, status, elapsed),
    slots.thinking,
    slots.tools,
    slots.answer,
    slots.error
  );
  return {
    el,
    slots,
    avatar,
    agent,
    status,
    elapsed,
    threadTag,
    gen: -1,
    base: '',
    shown: '',
    thinkingEl: null,
    tools: new Map(),
    firstSeen: Date.now(),
    runStatus: '',
  };
}

function renderStatus(card, status) {
  if (card.runStatus === status) return;
  card.runStatus = status;
  card.el.dataset.status = status;
  const s = card.status;
  s.replaceChildren();
  if (status === 'completed') s.append(icon('check'), h('span', { text: 'done' }));
  else if (status === 'error') s.append(icon('error'), h('span', { text: 'error' }));
  else s.append(h('span', { class: 'dots', 'aria-hidden': 'true' }), h('span', { text: 'running' }));
}

function renderElapsed(card, run) {
  const start = toMs(run.startedAt);
  const from = Number.isFinite(start) ? start : card.firstSeen;
  const end = card.runStatus === 'running' ? Date.now() : toMs(run.updatedAt);
  card.elapsed.textContent = formatDuration((Number.isFinite(end) ? end : Date.now()) - from);
  card.lastRun = run;
}

function renderThinking(card, text) {
  let display = text;
  if (card.base) {
    // After a resync the gateway may replay the run from its start (the new text catches up
    // with what is shown) or only its tail (the new text continues it).
    if (card.base.startsWith(text)) display = card.base;
    else if (text.startsWith(card.base)) card.base = '';
    else display = card.base + text;
  }
  if (!display || display === card.shown) return;
  if (!card.thinkingEl) {
    card.thinkingEl = h('p', {
      class: 'thinking',
      'data-testid': 'thinking',
      'aria-live': 'polite',
      'aria-relevant': 'additions text',
    });
    card.slots.thinking.append(
      h('div', { class: 'section-label', text: 'Thinking' }),
      card.thinkingEl
    );
  }
  // Append only the new part while the text grows, so screen readers hear the addition.
  if (card.shown && display.startsWith(card.shown)) {
    card.thinkingEl.append(document.createTextNode(display.slice(card.shown.length)));
  } else {
    card.thinkingEl.textContent = display;
  }
  card.shown = display;
}

// `key: value, key: value` for a small flat object, else null.
function flat(value) {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return null;
  const parts = [];
  for (const [k, v] of Object.entries(value)) {
    if (v !== null && typeof v === 'object') return null;
    parts.push(`${k}: ${JSON.stringify(v)}`);
  }
  return parts.join(', ');
}

function argsView(args) {
  if (args === undefined || args === null || (typeof args === 'object' && !Object.keys(args).length))
    return null;
  const oneLine = typeof args === 'string' ? args : flat(args) ?? JSON.stringify(args);
  if (oneLine.length <= 90 && !oneLine.includes('\n')) {
    return h('div', { class: 'tool-args' }, h('code', { text: oneLine }));
  }
  return h(
    'details',
    { class: 'tool-args' },
    h('summary', {}, h('code', { text: oneLine.slice(0, 60) + '…' })),
    h('pre', { tabindex: '0', text: asText(args) })
  );
}

// A tool call shows running (spinner) until its tool_completed; if the run ends first, the
// call stays data-status="running" (it never completed) but stops spinning: "interrupted".
function resultView(result) {
  const line = flat(result);
  if (line !== null && line.length <= 90) return h('code', { class: 'result-line', text: line });
  return h('pre', { tabindex: '0', text: asText(result) });
}

function renderTool(card, id, t, runEnded) {
  const status = t.status === 'done' || t.status === 'completed' ? 'done' : 'running';
  const look = status === 'running' && runEnded ? 'interrupted' : status;
  let tool = card.tools.get(id);
  if (!tool) {
    const name = h('span', { class: 'tool-name' });
    const state = h('span', { class: 'tool-state' });
    const mark = h('span', { class: 'tool-mark' });
    const el = h(
      'li',
      { class: 'tool', 'data-testid': 'tool', 'data-tool-call-id': id },
      h('div', { class: 'tool-head' }, mark, name, state)
    );
    tool = { el, name, state, mark, look: '', hasArgs: false, result: null };
    card.tools.set(id, tool);
    card.slots.tools.append(el);
  }
  const name = t.tool || 'tool';
  if (tool.name.textContent !== name) tool.name.textContent = name;
  if (!tool.hasArgs) {
    const a = argsView(t.args ?? t.arguments ?? t.input);
    if (a) {
      tool.el.append(a);
      tool.hasArgs = true;
    }
  }
  if (tool.look !== look) {
    tool.look = look;
    tool.el.dataset.status = status;
    tool.el.dataset.look = look;
    if (look === 'done') {
      tool.mark.replaceChildren(icon('check'));
      tool.state.replaceChildren(h('span', { text: 'done' }));
    } else if (look === 'interrupted') {
      tool.mark.replaceChildren(icon('stop'));
      tool.state.replaceChildren(h('span', { text: 'interrupted' }));
    } else {
      tool.mark.replaceChildren(spinner());
      tool.state.replaceChildren(
        h('span', {}, h('span', { text: 'running' }), h('span', { class: 'dots', 'aria-hidden': 'true' }))
      );
    }
  }
  if (status === 'done' && !tool.result && t.result !== undefined) {
    tool.result = h(
      'div',
      { class: 'tool-result' },
      h('div', { class: 'section-label', text: 'Result' }),
      resultView(t.result)
    );
    tool.el.append(tool.result);
  }
}

function renderRun(run) {
  if (!run || !run.run_id) return;
  const stick = nearBottom();
  let card = cards.get(run.run_id);
  if (!card) {
    card = createCard(run);
    cards.set(run.run_id, card);
    els.empty.hidden = true;
    els.log.append(card.el);
  }
  // A card from before a resync or a new client keeps what it showed; the new view of that
  // run only holds what came after.
  if (card.gen !== viewGen) {
    if (card.gen >= 0 && card.shown) card.base = card.shown;
    card.gen = viewGen;
  }

  const agent = run.agent || card.agent.textContent || 'agent';
  if (card.agent.textContent !== agent) {
    card.agent.textContent = agent;
    card.avatar.textContent = agent.trim().charAt(0).toUpperCase() || 'A';
  }
  if (run.thread_id && run.thread_id !== threadId) {
    card.threadTag.hidden = false;
    card.threadTag.textContent = 'other thread';
    card.threadTag.title = `thread ${run.thread_id}`;
  }
  const status = run.status === 'completed' || run.status === 'error' ? run.status : 'running';
  renderStatus(card, status);
  renderThinking(card, thinkingOf(run));
  for (const [id, t] of toolsOf(run)) {
    renderTool(card, String(t.tool_call_id ?? id), t, status !== 'running');
  }

  if (status === 'completed' && !card.answerEl && run.result !== undefined) {
    card.answerEl = h('div', { class: 'answer', 'data-testid': 'answer', text: asText(run.result) });
    card.slots.answer.append(h('div', { class: 'section-label', text: 'Answer' }), card.answerEl);
  }
  if (status === 'error' && !card.errorEl) {
    const message = asText(run.error) || 'the run failed';
    card.errorEl = h(
      'div',
      { class: 'run-error', 'data-testid': 'run-error', role: 'alert' },
      icon('error'),
      h('span', {}, h('strong', { text: 'Error' }), h('span', { text: `: ${message}` }))
    );
    card.slots.error.append(card.errorEl);
  }
  renderElapsed(card, run);
  if (stick) scrollToBottom();
}

// The running cards' timers tick once a second; finished cards keep their final duration.
setInterval(() => {
  for (const card of cards.values()) {
    if (card.runStatus === 'running' && card.lastRun) renderElapsed(card, card.lastRun);
  }
}, 1000);

// ---- the person's messages ------------------------------------------------------------

// A message is drawn when sent ('sending', or 'queued' while offline) and becomes 'sent' when
// its user_message event comes back from the gateway: then it is in the user's stream, every
// tab shows it, and a reload draws it again from the replay. Bubbles drawn from events carry
// their seq, so nothing is drawn twice.
const myConnections = new Set(); // this page's connection ids: its own messages come back
const shownMessages = new Set(); // seqs of the user_message events on the page

function setDelivery(el, delivery) {
  el.dataset.delivery = delivery;
  el.querySelector('.msg-meta-state').textContent = delivery === 'failed' ? 'not sent' : delivery;
}

function userBubble(text, delivery, ms, threadOf) {
  const meta = h('div', { class: 'msg-meta' }, h('span', { class: 'msg-meta-time', text: `You · ${clock(ms)} · ` }));
  if (threadOf && threadOf !== threadId) {
    meta.prepend(h('span', { class: 'tag', title: `thread ${threadOf}`, text: 'other thread' }), ' ');
  }
  meta.append(h('span', { class: 'msg-meta-state', text: delivery }));
  return h(
    'div',
    { class: 'user-msg', 'data-delivery': delivery },
    h('div', { class: 'bubble', 'data-testid': 'user-message', text }),
    meta
  );
}

function addUserMessage(text, delivery) {
  const el = userBubble(text, delivery);
  el.dataset.pending = '';
  appendToLog(el, { force: true });
}

function renderUserMessage(ev) {
  if (shownMessages.has(ev.seq)) return;
  shownMessages.add(ev.seq);
  const d = ev.data || {};
  const text = typeof d.text === 'string' ? d.text : asText(d.text);
  if (myConnections.has(d.connection_id)) {
    // Sent from this page: confirm its bubble rather than drawing another.
    for (const el of els.log.querySelectorAll('.user-msg[data-pending]')) {
      if (el.querySelector('.bubble').textContent !== text) continue;
      delete el.dataset.pending;
      el.dataset.seq = String(ev.seq);
      setDelivery(el, 'sent');
      return;
    }
  }
  const el = userBubble(text, 'sent', toMs(ev.timestamp), ev.thread_id);
  el.dataset.seq = String(ev.seq);
  appendToLog(el);
}

// What the gateway answers when a message did not make it into the stream.
function failOldestPending(reason) {
  const el = els.log.querySelector('.user-msg[data-pending]');
  if (!el) return;
  delete el.dataset.pending;
  setDelivery(el, 'failed');
  el.title = reason;
}

// ---- the client -----------------------------------------------------------------------

const RESERVED = new Set(['connected', 'ping', 'resync', 'error', 'closing', 'pong']);
const RUN_TYPES = new Set([
  'agent_started',
  'agent_thinking',
  'tool_executing',
  'tool_completed',
  'agent_completed',
  'agent_error',
]);

// True from page load until the first connection has replayed the conversation.
let restoring = false;

function start(resume) {
  viewGen++;
  const opts = { url: wsUrl, threadId };
  if (token) opts.token = token;
  else opts.userId = userId;
  if (storage) {
    opts.storage = storage;
    opts.storageKey = positionKey;
  }
  if (resume && Number.isFinite(resume.lastSeq)) {
    opts.lastSeq = resume.lastSeq;
    if (resume.epoch) opts.epoch = resume.epoch;
  }
  const c = connect(opts);
  client = c;
  const mine = (fn) => (arg) => {
    if (client === c) fn(arg);
  };
  c.on('state', mine(renderState));
  c.on('run', mine(renderRun));
  c.on(
    'resync',
    mine((info) => {
      viewGen++;
      if (restoring) {
        // Rebuilding on load: what is missing is the beginning of the conversation.
        const restarted = info.previousEpoch && info.epoch && info.previousEpoch !== info.epoch;
        const before = Number(info.fromSeq) - 1;
        const text = restarted
          ? 'The gateway was restarted since your last visit: the earlier conversation is no longer kept.'
          : before > 0
            ? `The beginning of this conversation is no longer kept by the gateway (${before} earlier event${before === 1 ? '' : 's'}); below is what it still holds.`
            : 'Part of this conversation is no longer kept by the gateway.';
        systemNote(text, 'warn', 'history-notice').classList.add('notice');
        return;
      }
      const lost = Number.isFinite(info?.lost) ? info.lost : 0;
      const what =
        lost > 0
          ? `${lost} event${lost === 1 ? '' : 's'} could not be replayed`
          : 'The gateway started the event stream over';
      systemNote(`${what}; the conversation above may be incomplete.`, 'warn', 'history-notice');
    })
  );
  c.on(
    'error',
    mine((ev) => {
      const msg = ev?.data?.error ?? ev?.message ?? asText(ev);
      // The client's own notices (socket errors while reconnecting, timeouts) are already
      // told by the connection state; only what the gateway answered goes in the chat.
      if (ev?.local) {
        console.warn('agentcast:', msg);
        return;
      }
      if (/^(message not published|no agent is listening|text:|thread_id:)/.test(String(msg))) {
        failOldestPending(String(msg));
      }
      systemNote(`The gateway answered: ${msg}`, 'warn');
    })
  );
  // The person's messages, from this tab, another tab, or the replay.
  c.on('user_message', mine((ev) => typeof ev.seq === 'number' && renderUserMessage(ev)));
  // Events that belong to no run (custom notifications, direct messages) become a line.
  c.on(
    '*',
    mine((ev) => {
      if (!ev || typeof ev.type !== 'string' || ev.run_id || ev.type === 'user_message') return;
      if (RESERVED.has(ev.type) || RUN_TYPES.has(ev.type)) return;
      const data = ev.data && Object.keys(ev.data).length ? `: ${asText(ev.data)}` : '';
      systemNote(`${ev.type}${data}`);
    })
  );
  if (c.runs && typeof c.runs.values === 'function') {
    for (const run of c.runs.values()) renderRun(run);
  }
  renderState({ state: c.state || 'connecting' });
  return c;
}

function restart() {
  const old = client;
  restoring = false;
  const resume = old ? { lastSeq: old.lastSeq, epoch: old.epoch } : null;
  client = null; // the old client's own 'closed' is not news
  try {
    old?.close();
  } catch {
    /* already closed */
  }
  start(resume);
}

els.reconnect.addEventListener('click', () => {
  restart();
  els.input.focus();
});

// ---- composer -------------------------------------------------------------------------

function autoGrow() {
  const ta = els.input;
  ta.style.height = 'auto';
  ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
}

els.input.addEventListener('input', autoGrow);
els.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    els.form.requestSubmit();
  }
});

els.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = els.input.value.trim();
  if (!text) {
    els.input.focus();
    return;
  }
  if (!client || client.state === 'closed') restart();
  let sentNow;
  try {
    sentNow = client.send({ type: 'user_message', thread_id: threadId, text });
  } catch (err) {
    systemNote(`Could not send: ${err?.message || err}`, 'warn');
    return;
  }
  // send() answers false when it queued the message until the connection is back.
  addUserMessage(text, sentNow === false ? 'queued' : 'sending');
  els.input.value = '';
  autoGrow();
  els.input.focus();
});

// Rebuild the conversation: everything the gateway still holds for this user, in the epoch
// this browser last saw (a changed epoch, or history gone, comes back as a resync).
const saved = readPosition(storage, positionKey);
restoring = true;
start({ lastSeq: 0, epoch: saved ? saved.epoch : null });
els.input.focus();
