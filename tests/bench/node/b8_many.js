// B8 many-to-many, node peer (docs/BENCHMARKS.md): N callers each make M
// calls (a small object {seq, name, data}, echoed back; each reply awaited
// before the next call) to a random other caller, all N at once, hosted on
// W worker_threads (N / W callers each, as concurrent async loops).
//
//   node tests/bench/node/b8_many.js [N] [M] [W]
//
// N defaults to 1000, M to 100, W to 100. The workers are linked by a
// MessageChannel per pair, all made before the clock starts; a call's
// target is a random caller on another worker, so every call and reply
// crosses threads, and the target's worker answers it. Prints key=value lines
// for scripts/bench, the keys of b8_many.lua: actors, calls, rate (calls/s),
// call_p50_us, call_p99_us.
'use strict';
const { Worker, isMainThread, parentPort, workerData, MessageChannel } = require('worker_threads');

const hr = () => Number(process.hrtime.bigint()) / 1e9;

function workerMain() {
  const { index, ports, n, m, w } = workerData;
  const per = Math.ceil(n / w);
  const pending = new Map();
  let nextId = 1;
  for (const port of Object.values(ports)) {
    port.on('message', (x) => {
      if (x.call) port.postMessage({ reply: x.call, msg: x.msg }); // the echo
      else { const r = pending.get(x.reply); pending.delete(x.reply); r(x.msg); }
    });
  }
  const call = (worker, msg) => new Promise((resolve) => {
    const id = nextId++;
    pending.set(id, resolve);
    ports[worker].postMessage({ call: id, msg });
  });
  async function one(samples) {
    const msg = { seq: 0, name: 'ping', data: [1, 2, 3] };
    for (let i = 1; i <= m; i++) {
      let other = Math.floor(Math.random() * (w - 1));
      if (other >= index) other++;
      msg.seq = i;
      const t0 = hr();
      const r = await call(other, msg);
      samples.push(hr() - t0);
      if (!r || r.seq !== i) throw new Error(`call ${i} came back as ${JSON.stringify(r)}`);
    }
  }
  parentPort.on('message', async () => { // go
    const mine = Math.max(0, Math.min(per, n - index * per));
    const samples = [];
    const loops = [];
    for (let k = 0; k < mine; k++) loops.push(one(samples));
    await Promise.all(loops);
    parentPort.postMessage(Float64Array.from(samples));
  });
  parentPort.postMessage('ready');
}

async function main() {
  const n = Number(process.argv[2]) || 1000, m = Number(process.argv[3]) || 100;
  const w = Math.min(Number(process.argv[4]) || 100, n);
  const ports = Array.from({ length: w }, () => ({}));
  const transfer = Array.from({ length: w }, () => []);
  for (let i = 0; i < w; i++) {
    for (let j = i + 1; j < w; j++) {
      const ch = new MessageChannel();
      ports[i][j] = ch.port1; ports[j][i] = ch.port2;
      transfer[i].push(ch.port1); transfer[j].push(ch.port2);
    }
  }
  const workers = [];
  const ready = [];
  for (let i = 0; i < w; i++) {
    const wk = new Worker(__filename, { workerData: { index: i, ports: ports[i], n, m, w }, transferList: transfer[i] });
    wk.on('error', (e) => { console.error(e); process.exit(1); });
    workers.push(wk);
    ready.push(new Promise((r) => wk.once('message', r)));
  }
  await Promise.all(ready);
  const t0 = hr();
  const done = workers.map((wk) => new Promise((r) => wk.once('message', r)));
  for (const wk of workers) wk.postMessage('go');
  const results = await Promise.all(done);
  const total = hr() - t0;
  let all = [];
  for (const s of results) all = all.concat(Array.from(s));
  all.sort((x, y) => x - y);
  const q = (p) => all[Math.min(all.length - 1, Math.floor(p * all.length))];
  process.stdout.write(`actors=${n}\nworkers=${w}\ncalls=${all.length}\nrate=${(all.length / total).toFixed(0)}\n` +
                       `call_p50_us=${(q(0.5) * 1e6).toFixed(3)}\ncall_p99_us=${(q(0.99) * 1e6).toFixed(3)}\n`);
  process.exit(0);
}

if (isMainThread) main().catch((e) => { console.error(e); process.exit(1); });
else workerMain();
