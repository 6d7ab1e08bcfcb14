// B1 ping-pong, node peer (docs/BENCHMARKS.md): A calls B with a small object
// ({seq, name, data}, as tests/bench/b1_pingpong.lua sends), B sends it back,
// one round trip at a time, N round trips, each one timed.
//
//   node tests/bench/node/b1_pingpong.js [N] [VARIANT...]
//
// N defaults to 50000; VARIANTs (default all three), named as the pulsar-lua
// ones they stand beside:
//   thread   A and B worker_threads, a MessageChannel between them
//   process  A and B child_process.fork children; node has no channel between
//            two children, so the parent relays each message (as pulsar-lua's
//            arbiter relays between two actors)
//   arbiter  B a forked child, the loop in the parent, over the fork's IPC
// Prints key=value lines for scripts/bench: <variant>_p50_us, <variant>_p99_us,
// <variant>_rate, the keys of b1_pingpong.lua.
'use strict';
const { Worker, isMainThread, parentPort, workerData, MessageChannel } = require('worker_threads');
const { fork } = require('child_process');

const hr = () => Number(process.hrtime.bigint()) / 1e9;

// call(msg) -> a Promise of the reply, over a post function and a message
// event: one call in flight at a time.
function caller(post, listen) {
  let waiting = null;
  listen((m) => { const w = waiting; waiting = null; w(m); });
  return (msg) => new Promise((resolve) => { waiting = resolve; post(msg); });
}

async function loop(call, n) {
  const msg = { seq: 0, name: 'ping', data: [1, 2, 3] };
  for (let i = 1; i <= Math.max(100, Math.floor(n / 10)); i++) { msg.seq = i; await call(msg); }
  const samples = new Float64Array(n);
  const start = hr();
  for (let i = 1; i <= n; i++) {
    msg.seq = i;
    const t0 = hr();
    const r = await call(msg);
    samples[i - 1] = hr() - t0;
    if (!r || r.seq !== i) throw new Error(`echo ${i} came back as ${JSON.stringify(r)}`);
  }
  const total = hr() - start;
  samples.sort();
  const q = (p) => samples[Math.min(n - 1, Math.floor(p * n))];
  return { p50: q(0.5), p99: q(0.99), rate: n / total };
}

function report(name, r) {
  process.stdout.write(`${name}_p50_us=${(r.p50 * 1e6).toFixed(3)}\n` +
                       `${name}_p99_us=${(r.p99 * 1e6).toFixed(3)}\n` +
                       `${name}_rate=${r.rate.toFixed(0)}\n`);
}

async function variant(v, n) {
  if (v === 'thread') {
    const ch = new MessageChannel();
    const b = new Worker(__filename, { workerData: { role: 'echo', port: ch.port2 }, transferList: [ch.port2] });
    const a = new Worker(__filename, { workerData: { role: 'loop', port: ch.port1, n }, transferList: [ch.port1] });
    const r = await new Promise((resolve, reject) => { a.once('message', resolve); a.once('error', reject); });
    await Promise.all([a.terminate(), b.terminate()]);
    return r;
  }
  if (v === 'process') {
    const a = fork(__filename, ['child-loop', String(n)]);
    const b = fork(__filename, ['child-echo']);
    const r = await new Promise((resolve, reject) => {
      a.on('message', (m) => (m.done ? resolve(m.done) : b.send(m)));
      b.on('message', (m) => a.send(m));
      a.once('exit', (c) => reject(new Error(`the loop child exited (${c})`)));
    });
    a.kill(); b.kill();
    return r;
  }
  if (v === 'arbiter') {
    const b = fork(__filename, ['child-echo']);
    const r = await loop(caller((m) => b.send(m), (f) => b.on('message', f)), n);
    b.kill();
    return r;
  }
  throw new Error(`b1_pingpong.js: unknown variant ${v}`);
}

if (!isMainThread) {
  const { role, port, n } = workerData;
  if (role === 'echo') port.on('message', (m) => port.postMessage(m));
  else loop(caller((m) => port.postMessage(m), (f) => port.on('message', f)), n)
    .then((r) => parentPort.postMessage(r));
} else if (process.argv[2] === 'child-echo') {
  process.on('message', (m) => process.send(m));
} else if (process.argv[2] === 'child-loop') {
  loop(caller((m) => process.send(m), (f) => process.on('message', f)), Number(process.argv[3]))
    .then((r) => process.send({ done: r }));
} else {
  const n = Number(process.argv[2]) || 50000;
  let vs = process.argv.slice(3);
  if (vs.length === 0) vs = ['process', 'thread', 'arbiter'];
  (async () => {
    for (const v of vs) report(v, await variant(v, n));
    process.exit(0);
  })().catch((e) => { console.error(e); process.exit(1); });
}
