// Summarises one bench run (the lines of raw.jsonl with its run id) into summary.md: medians
// with min..max over the repetitions, agentcast next to the Node.js peer, each target of the
// issue met or not; and writes the data files and charts.gp that gnuplot turns into PNGs.
//
//   node bench/summarize.mjs RAW.jsonl RUN_ID OUT_DIR [QUICK [BUILT_FROM]]
//
// Reads nothing but its arguments; scripts/bench.sh runs it after the scenarios.
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';

const [rawPath, runId, outDir, quickArg, builtFrom] = process.argv.slice(2);
if (!rawPath || !runId || !outDir) {
  console.error('usage: node bench/summarize.mjs RAW.jsonl RUN_ID OUT_DIR [QUICK [BUILT_FROM]]');
  process.exit(2);
}
const quick = quickArg === '1';
const rows = readFileSync(rawPath, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return null;
    }
  })
  .filter((r) => r && r.run === runId);
if (rows.length === 0) {
  console.error(`summarize: no lines of run ${runId} in ${rawPath}`);
  process.exit(1);
}

const PEERS = ['agentcast', 'node'];
const PEER_NAME = { agentcast: 'agentcast', node: 'Node.js + ws' };
const of = (label, peer) => rows.filter((r) => r.label === label && r.peer === peer);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// Statistics of fn over the runs of (label, peer): {med, min, max, n} or null.
function stat(label, peer, fn) {
  const xs = of(label, peer)
    .map(fn)
    .filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (xs.length === 0) return null;
  return { med: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

const f = {
  int: (x) => Math.round(x).toLocaleString('en-US'),
  k: (x) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e4 ? `${Math.round(x / 1e3)}k` : f.int(x)),
  us: (x) => (x >= 1000 ? `${(x / 1000).toFixed(x >= 1e4 ? 0 : 1)} ms` : `${Math.round(x)} µs`),
  s: (x) => `${x.toFixed(2)} s`,
  b: (x) => `${f.int(x)} B`,
  x: (x) => `${x.toFixed(2)}×`,
};

function cell(s, fmt) {
  if (!s) return '–';
  if (s.n === 1 || s.min === s.max) return fmt(s.med);
  return `${fmt(s.med)} (${fmt(s.min)}..${fmt(s.max)})`;
}

const deliveriesPerCpu = (r) =>
  r.server_cpu_publish_s > 0 ? r.deliveries / r.server_cpu_publish_s : undefined;
// CPUs' worth of work on the machine that was neither the server nor the loadgen
const otherLoad = (r) => {
  if (!(r.wall_s > 0) || typeof r.machine_busy_s !== 'number') return undefined;
  const ours =
    r.mode === 'sendprobe'
      ? (r.write_cpu_s ?? 0) + (r.writev_cpu_s ?? 0)
      : (r.server_cpu_connect_s ?? r.server_cpu_s ?? 0) +
        (r.server_cpu_publish_s ?? 0) +
        (r.broker_cpu_connect_s ?? 0) +
        (r.broker_cpu_publish_s ?? 0) +
        (r.loadgen_cpu_s ?? 0);
  return Math.max(0, (r.machine_busy_s - ours) / r.wall_s);
};

// ---- the ceiling

const probe = {
  write: stat('sendprobe', 'machine', (r) => r.write_frames_per_s),
  writeCpu: stat('sendprobe', 'machine', (r) => r.write_frames_per_cpu_s),
  writev: stat('sendprobe', 'machine', (r) => r.writev_frames_per_s),
  writevCalls: stat('sendprobe', 'machine', (r) => r.writev_calls_per_s),
  other: stat('sendprobe', 'machine', otherLoad),
};
const ceil = probe.write?.med;

// ---- targets

const targets = [];
const yes = (b) => (b === null ? 'n/a' : b ? '**met**' : 'not met');
function target(num, scenario, what, ac, node, goal, met, note = '') {
  targets.push({ num, scenario, what, ac, node, goal, met: yes(met), note });
}
const med = (s) => (s ? s.med : undefined);
const ratio = (a, b) => (a !== undefined && b ? a / b : undefined);
const both = (a, b) => (a === undefined || b === undefined ? null : a && b);

{
  const ac = stat('s1-fanout', 'agentcast', (r) => r.deliveries_per_s);
  const nd = stat('s1-fanout', 'node', (r) => r.deliveries_per_s);
  const vc = ratio(med(ac), ceil);
  const vn = ratio(med(ac), med(nd));
  target(1, 's1-fanout', 'deliveries/s', cell(ac, f.int), cell(nd, f.int),
    `≥ 0.9 × ceiling (${ceil ? f.int(ceil) : '?'}/s) and ≥ 2 × Node`,
    both(vc === undefined ? undefined : vc >= 0.9, vn === undefined ? undefined : vn >= 2),
    `${vc !== undefined ? f.x(vc) : '?'} ceiling, ${vn !== undefined ? f.x(vn) : '?'} Node`);
  const acc = stat('s1-fanout', 'agentcast', deliveriesPerCpu);
  const ndc = stat('s1-fanout', 'node', deliveriesPerCpu);
  const cc = probe.writeCpu?.med;
  target('1\'', 's1-fanout', 'deliveries per server CPU-second', cell(acc, f.int),
    cell(ndc, f.int), `(the same, per CPU-second: ceiling ${cc ? f.int(cc) : '?'})`,
    both(acc && cc ? acc.med >= 0.9 * cc : undefined, acc && ndc ? acc.med >= 2 * ndc.med : undefined),
    `${acc && cc ? f.x(acc.med / cc) : '?'} ceiling, ${acc && ndc ? f.x(acc.med / ndc.med) : '?'} Node`);
}
{
  const p99 = stat('s2-latency', 'agentcast', (r) => r.lat_p99_us);
  const p999 = stat('s2-latency', 'agentcast', (r) => r.lat_p999_us);
  target(2, 's2-latency', 'p99 at 20,000 events/s', cell(p99, f.us),
    cell(stat('s2-latency', 'node', (r) => r.lat_p99_us), f.us), '≤ 200 µs',
    p99 ? p99.med <= 200 : null);
  target(2, 's2-latency', 'p99.9 at 20,000 events/s', cell(p999, f.us),
    cell(stat('s2-latency', 'node', (r) => r.lat_p999_us), f.us), '≤ 2 ms',
    p999 ? p999.med <= 2000 : null);
}
for (const label of ['s3-idle-10k', 's3-idle-19k']) {
  const ac = stat(label, 'agentcast', (r) => r.bytes_per_conn);
  if (!ac && !of(label, 'node').length) continue;
  target(3, label, 'user-space bytes per idle connection (RSS delta / connections)',
    cell(ac, f.b), cell(stat(label, 'node', (r) => r.bytes_per_conn), f.b), '≤ 512 B',
    ac ? ac.med <= 512 : null);
}
{
  const ac = stat('s4-multi', 'agentcast', (r) => r.deliveries_per_s);
  const nd = stat('s4-multi', 'node', (r) => r.deliveries_per_s);
  const vn = ratio(med(ac), med(nd));
  target(4, 's4-multi', 'deliveries/s (1k users × 3 connections)', cell(ac, f.int),
    cell(nd, f.int), '≥ 2 × Node', vn === undefined ? null : vn >= 2,
    vn !== undefined ? `${f.x(vn)} Node` : '');
}
{
  const ac = stat('s5-stream', 'agentcast', (r) => r.deliveries_per_s);
  const nd = stat('s5-stream', 'node', (r) => r.deliveries_per_s);
  const vc = ratio(med(ac), ceil);
  target(5, 's5-stream', 'token events/s (1k runs × 202 events)', cell(ac, f.int),
    cell(nd, f.int), `≥ 3 × ceiling (${ceil ? f.int(3 * ceil) : '?'}/s)`,
    vc === undefined ? null : vc >= 3,
    `${vc !== undefined ? f.x(vc) : '?'} ceiling, ${ratio(med(ac), med(nd)) !== undefined ? f.x(med(ac) / med(nd)) : '?'} Node`);
}
{
  const w = stat('s6-storm', 'agentcast', (r) => (r.storm_whole_s >= 0 ? r.storm_whole_s : undefined));
  const bad = of('s6-storm', 'agentcast').reduce((a, r) => a + (r.lost ?? 0) + (r.dup ?? 0), 0);
  const runs = of('s6-storm', 'agentcast').length;
  target(6, 's6-storm', 'time until all 10,000 resumed clients are whole', cell(w, f.s),
    'no resume: not run', '≤ 2 s, 0 lost, 0 dup',
    runs ? Boolean(w && w.max <= 2 && bad === 0) : null,
    runs ? `lost+dup over ${runs} run(s): ${bad}; listen overflows ${cell(stat('s6-storm', 'agentcast', (r) => r.storm_listen_overflows), f.int)}` : '');
}
{
  const ac = stat('s7-http-batch', 'agentcast', (r) => r.events_per_s_accepted);
  const nd = stat('s7-http-batch', 'node', (r) => r.events_per_s_accepted);
  target(7, 's7-http-batch', 'events/s, 16 keep-alive publishers, 100-event arrays',
    cell(ac, f.int), cell(nd, f.int), '≥ 100,000/s', ac ? ac.med >= 100000 : null);
  const as = stat('s7-http-single', 'agentcast', (r) => r.events_per_s_accepted);
  const ns = stat('s7-http-single', 'node', (r) => r.events_per_s_accepted);
  target(7, 's7-http-single', 'events/s, 16 publishers, one event per request',
    cell(as, f.int), cell(ns, f.int), '(reported)', null);
}

// ---- correctness over every run

const BAD = ['lost', 'dup', 'misrouted', 'out_of_order', 'n_mismatch', 'run_order_errors',
  'proto_errors', 'not_recovered', 'connect_failed', 'conn_lost', 'publish_non200'];
const correctness = PEERS.map((peer) => {
  const rs = rows.filter((r) => r.peer === peer);
  const sums = Object.fromEntries(BAD.map((k) => [k, rs.reduce((a, r) => a + (r[k] ?? 0), 0)]));
  return { peer, runs: rs.length, failed: rs.filter((r) => r.ok !== true).length, sums };
});

// ---- every measurement

const SCEN = [
  ['s1-fanout', '10k users × 1 conn, events to random users, 1,000 in flight (agent socket, 100/frame)'],
  ['s2-latency', '10k users × 1 conn, a fixed 20,000 events/s, 1 event/frame'],
  ['s3-idle-10k', '10,000 idle connections, fresh server'],
  ['s3-idle-19k', '19,000 idle connections, fresh server'],
  ['s4-multi', '1k users × 3 conns, every event to all three (agent socket, 100/frame)'],
  ['s5-stream', '1k runs × (agent_started + 200 × 40 B agent_thinking + agent_completed), 100/frame, 10 consecutive per run'],
  ['s6-storm', '10k users at 20,000 events/s; all dropped at once halfway and resumed (last_seq+epoch)'],
  ['s7-http-batch', 'POST /v1/publish, 16 keep-alive publishers, 100-event arrays'],
  ['s7-http-single', 'POST /v1/publish, 16 keep-alive publishers, one event per request'],
];
const LOAD_METRICS = [
  ['deliveries/s', (r) => r.deliveries_per_s, f.int],
  ['events/s accepted', (r) => r.events_per_s_accepted, f.int],
  ['deliveries per server CPU-s', deliveriesPerCpu, f.int],
  ['latency p50', (r) => r.lat_p50_us, f.us],
  ['latency p99', (r) => r.lat_p99_us, f.us],
  ['latency p99.9', (r) => r.lat_p999_us, f.us],
  ['latency max', (r) => r.lat_max_us, f.us],
  ['server CPU (publish phase)', (r) => r.server_cpu_publish_s, f.s],
  ['server RSS at the end', (r) => r.server_rss_end_kb * 1024, (x) => `${(x / 1048576).toFixed(0)} MiB`],
  ['connect time', (r) => r.connect_s, f.s],
  ['loadgen CPU / wall', (r) => (r.wall_s > 0 ? r.loadgen_cpu_s / r.wall_s : undefined), f.x],
  ['other load on the machine (CPUs)', otherLoad, (x) => x.toFixed(2)],
];
const IDLE_METRICS = [
  ['user-space bytes / connection', (r) => r.bytes_per_conn, f.b],
  ['kernel slab bytes / socket (both ends counted, /2)', (r) => r.kernel_slab_bytes_per_socket, f.b],
  ['server RSS after', (r) => r.server_rss_after_kb * 1024, (x) => `${(x / 1048576).toFixed(1)} MiB`],
  ['connect time', (r) => r.connect_s, f.s],
  ['other load on the machine (CPUs)', otherLoad, (x) => x.toFixed(2)],
];
const STORM_METRICS = [
  ['all reconnected after', (r) => r.storm_reconnect_s, f.s],
  ['all whole after', (r) => r.storm_whole_s, f.s],
  ['listen queue overflows (dropped SYNs, retried after 1 s)', (r) => r.storm_listen_overflows, f.int],
  ['lost', (r) => r.lost, f.int],
  ['dup', (r) => r.dup, f.int],
];

// ---- summary.md

const first = rows[0];
const reps = Math.max(...rows.map((r) => r.rep));
const cpuModel = (os.cpus()[0]?.model ?? '?').trim();
const L = [];
L.push(`# agentcast benchmark, run ${runId}${quick ? ' (quick)' : ''}`);
L.push('');
L.push(`${reps} repetition(s), medians with min..max; agentcastd and the Node.js peer ` +
  '(bench/peers/node-ws: node:http + ws) run the same loadgen scenarios interleaved, each on ' +
  'a fresh server pinned to CPU 0 with the loadgen on CPU 1. ' +
  `Machine: ${os.cpus().length} × ${cpuModel}, Linux ${os.release()}, node ${process.version}. ` +
  `Raw lines: raw.jsonl (run "${runId}").` +
  (builtFrom ? ` agentcast sources: ${builtFrom} (at the end of the run).` : ''));
L.push('');
if (ceil) {
  L.push(`**Ceiling (sendprobe, same run):** one write() per ~150-byte frame to random sockets ` +
    `of 5,000 loopback pairs on one core: ${cell(probe.write, f.int)} frames/s ` +
    `(${cell(probe.writeCpu, f.int)} per CPU-second); writev() of 8 frames: ` +
    `${cell(probe.writev, f.int)} frames/s (${cell(probe.writevCalls, f.int)} calls/s).`);
  L.push('');
}
L.push('## Targets');
L.push('');
L.push('| # | scenario | measure | agentcast | Node.js + ws | target | verdict | |');
L.push('|---|---|---|---|---|---|---|---|');
for (const t of targets)
  L.push(`| ${t.num} | ${t.scenario} | ${t.what} | ${t.ac} | ${t.node} | ${t.goal} | ${t.met} | ${t.note} |`);
L.push('');
L.push('## Correctness (all runs)');
L.push('');
L.push(`| peer | runs | runs not ok | ${BAD.join(' | ')} |`);
L.push(`|---|---|---|${BAD.map(() => '---').join('|')}|`);
for (const c of correctness) {
  if (!c.runs) continue;
  L.push(`| ${PEER_NAME[c.peer]} | ${c.runs} | ${c.failed} | ${BAD.map((k) => c.sums[k]).join(' | ')} |`);
}
L.push('');
L.push('## Every scenario');
for (const [label, desc] of SCEN) {
  const present = PEERS.filter((p) => of(label, p).length);
  if (!present.length) continue;
  const mode = of(label, present[0])[0].mode;
  const metrics = mode === 'idle' ? IDLE_METRICS : mode === 'storm' ? [...STORM_METRICS, ...LOAD_METRICS] : LOAD_METRICS;
  L.push('');
  L.push(`### ${label}: ${desc}`);
  L.push('');
  L.push(`| | ${PEERS.map((p) => PEER_NAME[p]).join(' | ')} |`);
  L.push(`|---|${PEERS.map(() => '---').join('|')}|`);
  for (const [name, fn, fmt] of metrics) {
    const cells = PEERS.map((p) => cell(stat(label, p, fn), fmt));
    if (cells.every((c) => c === '–')) continue;
    L.push(`| ${name} | ${cells.join(' | ')} |`);
  }
  if (label === 's6-storm' && !of(label, 'node').length)
    L.push('\nThe Node.js peer keeps no history, so it cannot resume: the storm runs against agentcast only.');
}

// ---- several nodes: the same load on 1 memory node and on 2 nodes sharing a Redis

const CLUSTER = [
  ['memory1', 'redis2', '2k users × 2 conns, 2 publishers, 100-event frames, 10 in flight each (as fast as possible)'],
  ['memory1-rate', 'redis2-rate', 'the same users at a fixed 5,000 events/s, one event per frame'],
];
if (CLUSTER.some(([a, b]) => of(a, 'agentcast').length || of(b, 'agentcast').length)) {
  const perEvent = (cpu) => (r) => (r[cpu] >= 0 && r.accepted > 0 ? (r[cpu] / r.accepted) * 1e6 : undefined);
  const evalshaUs = (r) => (r.redis_calls?.evalsha ? r.redis_usec.evalsha / r.redis_calls.evalsha : undefined);
  const badSum = (r) => ['lost', 'dup', 'misrouted', 'out_of_order', 'n_mismatch', 'proto_errors']
    .reduce((a, k) => a + (r[k] ?? 0), 0);
  const ROWS = [
    ['events/s accepted', (r) => r.events_per_s_accepted, f.int],
    ['deliveries/s', (r) => r.deliveries_per_s, f.int],
    ['latency p50', (r) => r.lat_p50_us, f.us],
    ['latency p99', (r) => r.lat_p99_us, f.us],
    ['latency p99.9', (r) => r.lat_p999_us, f.us],
    ['latency max', (r) => r.lat_max_us, f.us],
    ['gateway CPU, all nodes (publish phase)', (r) => r.server_cpu_publish_s, f.s],
    ['gateway CPU per event', perEvent('server_cpu_publish_s'), (x) => `${x.toFixed(1)} µs`],
    ['Redis CPU (publish phase, /proc)', (r) => r.broker_cpu_publish_s, f.s],
    ['Redis CPU per event', perEvent('broker_cpu_publish_s'), (x) => `${x.toFixed(1)} µs`],
    ['Redis commands per event (the script\'s own included)', (r) => r.redis_calls_per_event, (x) => x.toFixed(2)],
    ['EVALSHA time in Redis per call', evalshaUs, (x) => `${x.toFixed(0)} µs`],
    ['bytes into Redis per event', (r) => r.redis_in_bytes_per_event, f.b],
    ['bytes out of Redis per event', (r) => r.redis_out_bytes_per_event, f.b],
    ['redis-cli --latency avg', (r) => r.redis_cli_latency_ms?.avg, (x) => `${x.toFixed(2)} ms`],
    ['redis-cli --latency max', (r) => r.redis_cli_latency_ms?.max, (x) => `${x} ms`],
    ['lost + dup + misrouted + out of order + n mismatch + proto errors', badSum, f.int],
    ['`delivered` in replies / deliveries expected', (r) => (r.deliveries_expected ? r.server_delivered / r.deliveries_expected : undefined), f.x],
    ['loadgen CPU / wall', (r) => (r.wall_s > 0 ? r.loadgen_cpu_s / r.wall_s : undefined), f.x],
    ['other load on the machine (CPUs)', otherLoad, (x) => x.toFixed(2)],
  ];
  L.push('');
  L.push('## Several nodes: 2 agentcastd on one Redis vs 1 agentcastd with the memory broker');
  L.push('');
  L.push('The same loadgen flags on both (`--targets` over the nodes: each user has one connection ' +
    'on each node, each node has one publisher); nothing pinned, the loadgen, the node(s) and ' +
    'redis-server share both CPUs.');
  for (const [a, b, desc] of CLUSTER) {
    if (!of(a, 'agentcast').length && !of(b, 'agentcast').length) continue;
    L.push('');
    L.push(`### ${a} vs ${b}: ${desc}`);
    L.push('');
    L.push(`| | ${a} (1 node, memory) | ${b} (2 nodes, Redis) |`);
    L.push('|---|---|---|');
    for (const [name, fn, fmt] of ROWS) {
      const cells = [a, b].map((l) => cell(stat(l, 'agentcast', fn), fmt));
      if (cells.every((c) => c === '–')) continue;
      L.push(`| ${name} | ${cells.join(' | ')} |`);
    }
  }
  // Redis's work per event, command by command (commandstats counts what the script calls)
  const cmds = new Set();
  for (const [, b] of CLUSTER) for (const r of of(b, 'agentcast')) Object.keys(r.redis_calls ?? {}).forEach((c) => cmds.add(c));
  if (cmds.size) {
    const withData = CLUSTER.filter(([, b]) => of(b, 'agentcast').some((r) => r.redis_calls));
    L.push('');
    L.push('### Redis commands per accepted event (INFO commandstats, publish phase)');
    L.push('');
    L.push(`| command | ${withData.map(([, b]) => `${b}: calls per event`).join(' | ')} | ${withData.map(([, b]) => `${b}: µs in Redis per event`).join(' | ')} |`);
    L.push(`|---|${withData.map(() => '---|---').join('|')}|`);
    const order = [...cmds].sort((x, y) => (x === 'evalsha' ? -1 : y === 'evalsha' ? 1 : x.localeCompare(y)));
    for (const c of order) {
      const calls = withData.map(([, b]) => cell(stat(b, 'agentcast', (r) => (r.redis_calls && r.accepted ? (r.redis_calls[c] ?? 0) / r.accepted : undefined)), (x) => x.toFixed(x < 0.1 ? 4 : 2)));
      const usec = withData.map(([, b]) => cell(stat(b, 'agentcast', (r) => (r.redis_usec && r.accepted ? (r.redis_usec[c] ?? 0) / r.accepted : undefined)), (x) => x.toFixed(2)));
      L.push(`| ${c} | ${calls.join(' | ')} | ${usec.join(' | ')} |`);
    }
    L.push('');
    L.push("EVALSHA's time includes the commands its script runs; the other rows are those " +
      "commands (PING and SET: the nodes' heartbeats, and PING also redis-cli --latency's 100 a second).");
  }
}
L.push('');
if (probe.other)
  L.push(`Other load on the machine during sendprobe: ${cell(probe.other, (x) => x.toFixed(2))} CPUs ` +
    '(busy CPU time in /proc/stat that was neither ours nor the server\'s; a shared machine ' +
    'makes every figure lower and noisier than on an idle one).');
L.push('');
writeFileSync(`${outDir}/summary.md`, L.join('\n'));

// ---- chart data and the gnuplot script

const dat = (name, lines) => writeFileSync(`${outDir}/${name}`, `${lines.join('\n')}\n`);
const triple = (s) => (s ? `${s.med} ${s.min} ${s.max}` : '0 0 0');

const tput = [];
for (const [label, fn] of [
  ['s1-fanout', (r) => r.deliveries_per_s],
  ['s4-multi', (r) => r.deliveries_per_s],
  ['s5-stream', (r) => r.deliveries_per_s],
  ['s7-http-batch', (r) => r.events_per_s_accepted],
  ['s7-http-single', (r) => r.events_per_s_accepted],
]) {
  if (!PEERS.some((p) => of(label, p).length)) continue;
  tput.push(`"${label}" ${PEERS.map((p) => triple(stat(label, p, fn))).join(' ')}`);
}
dat('throughput.dat', tput);

const lat = [];
for (const [name, key] of [['p50', 'lat_p50_us'], ['p99', 'lat_p99_us'], ['p99.9', 'lat_p999_us'], ['max', 'lat_max_us']])
  lat.push(`"${name}" ${PEERS.map((p) => triple(stat('s2-latency', p, (r) => r[key]))).join(' ')}`);
dat('latency.dat', lat);

const mem = [];
for (const label of ['s3-idle-10k', 's3-idle-19k'])
  if (PEERS.some((p) => of(label, p).length))
    mem.push(`"${label}" ${PEERS.map((p) => triple(stat(label, p, (r) => r.bytes_per_conn))).join(' ')}`);
dat('memory.dat', mem);

const gp = [];
gp.push('set terminal pngcairo size 960,540 font "sans,10"');
gp.push('set style data histogram');
gp.push('set style histogram errorbars gap 2 lw 1');
gp.push('set style fill solid 0.8 border -1');
gp.push('set key top right');
gp.push('set grid ytics');
gp.push('set yrange [0:*]');
gp.push('set format y "%.0s%c"');
{
  // room for the ceiling line even when every bar is below it
  const top = Math.max(ceil ?? 0, ...tput.flatMap((l) => l.split(' ').slice(1).map(Number)));
  gp.push(`set yrange [0:${Math.ceil(top * 1.12)}]`);
}
gp.push(`set output "throughput.png"`);
gp.push(`set title "Events (deliveries) per second, median and min..max of ${reps} run(s)"`);
if (ceil) {
  gp.push(`set arrow 1 from graph 0, first ${ceil} to graph 1, first ${ceil} nohead dt 2 lw 2 lc rgb "#aa0000"`);
  gp.push(`set label 1 "one-write-per-frame ceiling (sendprobe)" at graph 0.01, first ${ceil} offset 0,0.7 tc rgb "#aa0000"`);
}
gp.push('plot "throughput.dat" using 2:3:4:xtic(1) title "agentcast" lc rgb "#1f77b4", ' +
  '"" using 5:6:7 title "Node.js + ws" lc rgb "#ff7f0e"');
gp.push('unset arrow 1; unset label 1');
gp.push('set output "latency.png"');
gp.push('set title "s2-latency: publish-to-receive latency at 20,000 events/s, 10k connections (log scale)"');
gp.push('set logscale y');
gp.push('set yrange [10:*]');
gp.push('set format y "%.0f"');
gp.push('set ylabel "microseconds"');
gp.push('set arrow 2 from graph 0, first 200 to graph 1, first 200 nohead dt 2 lc rgb "#aa0000"');
gp.push('set label 2 "p99 target 200 µs" at graph 0.01, first 200 offset 0,0.7 tc rgb "#aa0000"');
gp.push('set arrow 3 from graph 0, first 2000 to graph 1, first 2000 nohead dt 3 lc rgb "#aa0000"');
gp.push('set label 3 "p99.9 target 2 ms" at graph 0.01, first 2000 offset 0,0.7 tc rgb "#aa0000"');
gp.push('plot "latency.dat" using 2:3:4:xtic(1) title "agentcast" lc rgb "#1f77b4", ' +
  '"" using 5:6:7 title "Node.js + ws" lc rgb "#ff7f0e"');
gp.push('unset logscale y; unset arrow 2; unset label 2; unset arrow 3; unset label 3');
gp.push('set yrange [0:*]');
gp.push('set format y "%.0f"');
gp.push('set ylabel "bytes"');
gp.push('set output "memory.png"');
gp.push('set terminal pngcairo size 640,400 font "sans,10"');
gp.push('set title "User-space memory per idle connection (RSS delta / connections)"');
gp.push('set arrow 4 from graph 0, first 512 to graph 1, first 512 nohead dt 2 lc rgb "#aa0000"');
gp.push('set label 4 "target 512 B" at graph 0.01, first 512 offset 0,0.7 tc rgb "#aa0000"');
gp.push('plot "memory.dat" using 2:3:4:xtic(1) title "agentcast" lc rgb "#1f77b4", ' +
  '"" using 5:6:7 title "Node.js + ws" lc rgb "#ff7f0e"');
writeFileSync(`${outDir}/charts.gp`, `${gp.join('\n')}\n`);
