// The operations dashboard: polls GET /v1/stats once a second and shows the gauges and a
// live chart of events per second by type (rates from successive samples, the last 180).
// Asks for the API key only when the gateway answers 401; the key lives in sessionStorage.

const $ = (id) => document.getElementById(id);

const POLL_MS = 1000;
const MAX_SAMPLES = 180;
const WINDOW_MS = MAX_SAMPLES * POLL_MS;
const KEY_STORE = 'agentcast.api_key';

// One line per type: a color that reads on light and dark, and a dash pattern so the lines
// can be told apart without color.
const TYPES = [
  { key: 'agent_started', color: '#3b82f6', dash: [] },
  { key: 'agent_thinking', color: '#8b5cf6', dash: [6, 3] },
  { key: 'tool_executing', color: '#f59e0b', dash: [] },
  { key: 'tool_completed', color: '#10b981', dash: [2, 3] },
  { key: 'agent_completed', color: '#06b6d4', dash: [10, 4] },
  { key: 'agent_error', color: '#ef4444', dash: [] },
  { key: 'user_message', color: '#ec4899', dash: [1, 3] },
  { key: 'custom', color: '#94a3b8', dash: [4, 4] },
];

const CLOSES = [
  ['evicted_4001', 'Evicted: over the per-user connection cap (4001)'],
  ['stale_4002', 'Stale: nothing received in time (4002)'],
  ['too_slow_4008', 'Too slow: backlog over the queue cap (4008)'],
  ['rate_limited_1008_429', 'Rate limited: frames (1008) or handshakes (429)'],
];

const els = {
  state: $('dash-state'),
  stateText: $('dash-state-text'),
  form: $('key-form'),
  keyInput: $('api-key'),
  keyError: $('key-error'),
  meta: $('dash-meta'),
  conns: $('v-conns'),
  connsSub: $('s-conns'),
  users: $('v-users'),
  usersSub: $('s-users'),
  runs: $('v-runs'),
  slow: $('v-slow'),
  slowTile: $('t-slow'),
  hist: $('v-hist'),
  histSub: $('s-hist'),
  rate: $('v-rate'),
  rateSub: $('s-rate'),
  canvas: $('chart'),
  legend: $('legend'),
  closes: $('closes-body'),
};

// ---- formatting -----------------------------------------------------------------------

const num = new Intl.NumberFormat('en');

function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
}

function rate(r) {
  if (!Number.isFinite(r)) return '–';
  return r >= 100 ? num.format(Math.round(r)) : r.toFixed(1);
}

function uptime(s) {
  if (!Number.isFinite(s)) return '–';
  s = Math.floor(s);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${ss} s`;
  return `${ss} s`;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setState(state, text) {
  els.state.dataset.state = state;
  setText(els.stateText, text);
}

// ---- samples and rates ----------------------------------------------------------------

let prev = null; // { t: server seconds, at: client ms, counts }
const points = []; // { at: client ms, byType: {type: rate}, total }
let slowSeen = []; // [client ms, too_slow count] to tell a recent increase

function ingest(stats) {
  const at = Date.now();
  const counts = {};
  for (const { key } of TYPES) counts[key] = Number(stats.events_by_type?.[key]) || 0;
  const t = Number(stats.uptime_s);
  if (prev) {
    const restarted =
      (Number.isFinite(t) && Number.isFinite(prev.t) && t < prev.t) ||
      TYPES.some(({ key }) => counts[key] < prev.counts[key]);
    if (restarted) {
      points.length = 0;
    } else {
      // The server's own clock measures the interval its counters cover; the page's clock is
      // the fallback.
      let dt = Number.isFinite(t) && Number.isFinite(prev.t) ? t - prev.t : (at - prev.at) / 1000;
      if (!(dt > 0.05)) dt = (at - prev.at) / 1000;
      if (dt > 0) {
        const byType = {};
        let total = 0;
        for (const { key } of TYPES) {
          byType[key] = Math.max(0, (counts[key] - prev.counts[key]) / dt);
          total += byType[key];
        }
        points.push({ at, byType, total });
        if (points.length > MAX_SAMPLES) points.splice(0, points.length - MAX_SAMPLES);
      }
    }
  }
  prev = { t, at, counts };
}

// ---- rendering ------------------------------------------------------------------------

function buildLegend() {
  for (const type of TYPES) {
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.setAttribute('aria-hidden', 'true');
    swatch.style.borderTopColor = type.color;
    swatch.style.borderTopStyle = type.dash.length ? 'dashed' : 'solid';
    const name = document.createElement('span');
    name.textContent = type.key;
    const value = document.createElement('span');
    value.className = 'rate';
    value.textContent = '–';
    const li = document.createElement('li');
    li.append(swatch, name, value);
    type.rateEl = value;
    els.legend.append(li);
  }
}

function buildCloses() {
  for (const [key, label] of CLOSES) {
    const tr = document.createElement('tr');
    const th = document.createElement('td');
    th.textContent = label;
    const td = document.createElement('td');
    td.className = 'num';
    td.textContent = '–';
    td.dataset.key = key;
    tr.append(th, td);
    els.closes.append(tr);
  }
}

function render(stats) {
  const last = points[points.length - 1];
  setText(els.conns, String(stats.total_connections ?? '–'));
  setText(els.connsSub, `queued ${bytes(Number(stats.queued_bytes))}`);
  setText(els.users, String(stats.total_users ?? '–'));
  setText(els.usersSub, `${num.format(Number(stats.active_emitters) || 0)} streams kept`);
  setText(els.runs, String(stats.open_runs ?? '–'));

  const slow = Number(stats.closes?.too_slow_4008) || 0;
  setText(els.slow, num.format(slow));
  const now = Date.now();
  slowSeen.push([now, slow]);
  slowSeen = slowSeen.filter(([at]) => now - at <= 60000);
  els.slowTile.classList.toggle('tile-alert', slow > slowSeen[0][1]);

  setText(els.hist, bytes(Number(stats.history_bytes)));
  setText(els.histSub, `${num.format(Number(stats.history_events) || 0)} events retained`);
  setText(els.rate, last ? rate(last.total) : '–');
  setText(
    els.rateSub,
    `${num.format(Number(stats.events_total) || 0)} events, ${num.format(
      Number(stats.deliveries_total) || 0
    )} deliveries`
  );

  for (const type of TYPES) setText(type.rateEl, last ? `${rate(last.byType[type.key])}/s` : '–');
  for (const td of els.closes.querySelectorAll('td[data-key]')) {
    const v = stats.closes?.[td.dataset.key];
    setText(td, v === undefined ? '–' : num.format(Number(v) || 0));
  }

  const parts = [];
  if (stats.version) parts.push(`version ${stats.version}`);
  parts.push(`up ${uptime(Number(stats.uptime_s))}`);
  if (stats.broker) parts.push(`broker ${stats.broker}`);
  parts.push(`updated ${new Date().toLocaleTimeString()}`);
  setText(els.meta, parts.join(' · '));

  els.canvas.setAttribute(
    'aria-label',
    last
      ? `Events per second by type, now: ${TYPES.map((t) => `${t.key} ${rate(last.byType[t.key])}`).join(', ')}`
      : 'Events per second by type: collecting the first samples'
  );
  draw();
}

function niceCeil(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function draw() {
  const canvas = els.canvas;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const muted = cssVar('--muted');
  const grid = cssVar('--border');
  const font = getComputedStyle(document.body).fontFamily;
  ctx.font = `12px ${font}`;

  const now = Date.now();
  const visible = points.filter((p) => now - p.at <= WINDOW_MS);
  let max = 0;
  for (const p of visible) for (const t of TYPES) max = Math.max(max, p.byType[t.key]);
  const top = niceCeil(max * 1.1);

  const ticks = [0, 1, 2, 3, 4].map((i) => {
    const v = (top * i) / 4;
    return `${Number.isInteger(v) ? v : Number(v.toFixed(2))}/s`;
  });
  const left = Math.max(36, ...ticks.map((t) => ctx.measureText(t).width + 12));
  const right = 8;
  const plotTop = 8;
  const bottom = 22;
  const pw = w - left - right;
  const ph = h - plotTop - bottom;

  // Grid and axes labels
  ctx.lineWidth = 1;
  ctx.strokeStyle = grid;
  ctx.fillStyle = muted;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(plotTop + ph - (ph * i) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + pw, y);
    ctx.stroke();
    ctx.fillText(ticks[i], left - 6, y);
  }
  ctx.textBaseline = 'top';
  for (let m = 0; m <= 3; m++) {
    const x = left + pw - (pw * m * 60000) / WINDOW_MS;
    ctx.textAlign = m === 0 ? 'right' : m === 3 ? 'left' : 'center';
    ctx.fillText(m === 0 ? 'now' : `−${m} min`, x, plotTop + ph + 6);
  }

  if (visible.length === 0) {
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('collecting samples…', left + pw / 2, plotTop + ph / 2);
    return;
  }

  const xOf = (at) => left + pw - ((now - at) / WINDOW_MS) * pw;
  const yOf = (v) => plotTop + ph - (v / top) * ph;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, plotTop - 2, pw, ph + 4);
  ctx.clip();
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  for (const t of TYPES) {
    ctx.strokeStyle = t.color;
    ctx.setLineDash(t.dash);
    ctx.beginPath();
    visible.forEach((p, i) => {
      const x = xOf(p.at);
      const y = yOf(p.byType[t.key]);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    if (visible.length === 1) {
      const p = visible[0];
      ctx.lineTo(xOf(p.at) - 2, yOf(p.byType[t.key]));
    }
    ctx.stroke();
  }
  ctx.restore();
}

// ---- polling and the key form -----------------------------------------------------------

let apiKey = '';
try {
  apiKey = sessionStorage.getItem(KEY_STORE) || '';
} catch {
  /* storage refused: ask each time */
}
let timer = null;
let chain = 0; // a new key starts a new polling chain; the old one stops at its next turn
let waitingForKey = false;
let lastStats = null;

function askForKey(refused) {
  waitingForKey = true;
  els.form.hidden = false;
  els.keyError.hidden = !refused;
  els.keyError.textContent = refused ? 'That key was refused (401). Check it and try again.' : '';
  setState('needs-key', refused ? 'API key refused' : 'API key needed');
  if (document.activeElement !== els.keyInput) els.keyInput.focus();
}

async function poll(gen = chain) {
  if (gen !== chain) return;
  timer = null;
  const ctl = new AbortController();
  const abort = setTimeout(() => ctl.abort(), 4000);
  try {
    const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
    const res = await fetch('/v1/stats', { headers, cache: 'no-store', signal: ctl.signal });
    if (gen !== chain) return;
    if (res.status === 401) {
      const refused = Boolean(apiKey);
      if (refused) {
        apiKey = '';
        try {
          sessionStorage.removeItem(KEY_STORE);
        } catch {
          /* nothing kept */
        }
      }
      askForKey(refused);
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const stats = await res.json();
    if (!els.form.hidden) {
      els.form.hidden = true;
      els.keyInput.value = '';
    }
    setState('live', 'live');
    lastStats = stats;
    ingest(stats);
    render(stats);
  } catch (err) {
    if (gen !== chain) return;
    const why = err.name === 'AbortError' ? 'no answer' : err.message;
    setState('offline', `offline (${why}), retrying`);
  } finally {
    clearTimeout(abort);
    if (gen === chain && !waitingForKey && timer === null) timer = setTimeout(() => poll(gen), POLL_MS);
  }
}

els.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const key = els.keyInput.value.trim();
  if (!key) {
    els.keyInput.focus();
    return;
  }
  apiKey = key;
  try {
    sessionStorage.setItem(KEY_STORE, key);
  } catch {
    /* kept in memory only */
  }
  waitingForKey = false;
  els.keyError.hidden = true;
  setState('connecting', 'checking key…');
  if (timer !== null) clearTimeout(timer);
  timer = null;
  chain++;
  poll(chain);
});

buildLegend();
buildCloses();
new ResizeObserver(() => draw()).observe(els.canvas);
matchMedia('(prefers-color-scheme: dark)').addEventListener?.('change', () => draw());
// Keep the chart moving between samples when the tab is visible.
setInterval(() => {
  if (lastStats && !document.hidden) draw();
}, 250);
poll();
