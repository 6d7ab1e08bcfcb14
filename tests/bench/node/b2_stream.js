// B2 one-way stream, node peer (docs/BENCHMARKS.md): A sends N no-reply
// messages ({command: 'hit', seq}) to B, then one ping to learn they have all
// arrived; B counts them (checked) and stamps the time of every 10000th.
//
//   node tests/bench/node/b2_stream.js [N] [VARIANT...]
//
// N defaults to 1000000; VARIANTs (default both), named as the pulsar-lua ones:
//   thread   A and B worker_threads, a MessageChannel between them
//   process  A and B child_process.fork children, the parent relaying (node
//            has no channel between two children)
// A sends in batches of 10000 and lets its loop run between batches (a
// process waits for its last send of the batch to be written). Prints
// key=value lines for scripts/bench, the keys of b2_stream.lua:
// <variant>_rate_p50, <variant>_rate_p01 (msg/s over B's 10000-message
// batches: median, slowest 1%), <variant>_rate_total (N / the time from A's
// first send to the ping's answer).
'use strict';
const { Worker, isMainThread, parentPort, workerData, MessageChannel } = require('worker_threads');
const { fork } = require('child_process');

const BATCH = 10000;
const hr = () => Number(process.hrtime.bigint()) / 1e9;

// B: counts hits, stamps every BATCH-th, answers ping and stats.
function sink(post, listen) {
  let count = 0;
  const marks = [];
  listen((m) => {
    if (m.command === 'hit') {
      count++;
      if (count % BATCH === 0) marks.push(hr());
    } else if (m.command === 'ping') {
      post({ reply: 'pong' });
    } else if (m.command === 'stats') {
      const rates = [];
      for (let i = 1; i < marks.length; i++) rates.push(BATCH / (marks[i] - marks[i - 1]));
      rates.sort((x, y) => x - y);
      const q = (p) => (rates.length ? rates[Math.min(rates.length - 1, Math.floor(p * rates.length))] : null);
      post({ reply: { count, p50: q(0.5), p01: q(0.01) } });
    }
  });
}

// A: the stream, then ping and stats; `flush` waits until a batch is out.
async function source(post, listen, flush, n) {
  let waiting = null;
  listen((m) => { const w = waiting; waiting = null; w(m.reply); });
  const ask = (command) => new Promise((resolve) => { waiting = resolve; post({ command }); });
  const start = hr();
  for (let i = 0; i < n;) {
    const upto = Math.min(n, i + BATCH);
    for (let j = i + 1; j <= upto; j++) post({ command: 'hit', seq: j });
    i = upto;
    await flush();
  }
  const pong = await ask('ping');
  const total = n / (hr() - start);
  const st = await ask('stats');
  if (pong !== 'pong' || st.count !== n) throw new Error(`B got ${st.count} of ${n} messages (ping: ${pong})`);
  return { p50: st.p50 || total, p01: st.p01 || total, total };
}

function report(v, r) {
  process.stdout.write(`${v}_rate_p50=${r.p50.toFixed(0)}\n${v}_rate_p01=${r.p01.toFixed(0)}\n` +
                       `${v}_rate_total=${r.total.toFixed(0)}\n`);
}

async function variant(v, n) {
  if (v === 'thread') {
    const ch = new MessageChannel();
    const b = new Worker(__filename, { workerData: { role: 'sink', port: ch.port2 }, transferList: [ch.port2] });
    const a = new Worker(__filename, { workerData: { role: 'source', port: ch.port1, n }, transferList: [ch.port1] });
    const r = await new Promise((resolve, reject) => { a.once('message', resolve); a.once('error', reject); });
    await Promise.all([a.terminate(), b.terminate()]);
    return r;
  }
  if (v === 'process') {
    const a = fork(__filename, ['child-source', String(n)]);
    const b = fork(__filename, ['child-sink']);
    const r = await new Promise((resolve, reject) => {
      a.on('message', (m) => (m.done ? resolve(m.done) : b.send(m)));
      b.on('message', (m) => a.send(m));
      a.once('exit', (c) => reject(new Error(`the source child exited (${c})`)));
    });
    a.kill(); b.kill();
    return r;
  }
  throw new Error(`b2_stream.js: unknown variant ${v}`);
}

if (!isMainThread) {
  const { role, port, n } = workerData;
  const post = (m) => port.postMessage(m), listen = (f) => port.on('message', f);
  if (role === 'sink') sink(post, listen);
  else source(post, listen, () => new Promise((r) => setImmediate(r)), n).then((r) => parentPort.postMessage(r));
} else if (process.argv[2] === 'child-sink') {
  sink((m) => process.send(m), (f) => process.on('message', f));
} else if (process.argv[2] === 'child-source') {
  // the batch's last send has a callback: wait for it to be written
  let last = null;
  const post = (m) => { if (m.seq && m.seq % BATCH === 0) last = new Promise((r) => process.send(m, r)); else process.send(m); };
  const flush = () => last || new Promise((r) => setImmediate(r));
  source(post, (f) => process.on('message', f), flush, Number(process.argv[3]))
    .then((r) => process.send({ done: r }));
} else {
  const n = Number(process.argv[2]) || 1000000;
  let vs = process.argv.slice(3);
  if (vs.length === 0) vs = ['thread', 'process'];
  (async () => {
    for (const v of vs) report(v, await variant(v, n));
    process.exit(0);
  })().catch((e) => { console.error(e); process.exit(1); });
}
