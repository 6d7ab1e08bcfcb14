// B10 WebSocket echo, node peer (docs/BENCHMARKS.md): an echo server with
// the `ws` package from npm on WORKERS (default 2) processes of node's
// cluster module sharing one port (the primary hands each connection to a
// worker), the way node serves on several cores; loaded by
// tests/bench/b10_client.c like the C floor and pulsar-lua.
//
//   NODE_PATH=build/bench-node/node_modules node tests/bench/node/b10_ws.js [WORKERS]
//
// scripts/bench installs `ws` there with npm when it is missing. Prints
// "address=127.0.0.1:PORT" once every worker listens, then serves until
// SIGTERM. Each message is sent back as it came (text as text, binary as
// binary); ws's defaults otherwise (no permessage-deflate on a server).
'use strict';
const cluster = require('cluster');

const workers = Number(process.argv[2]) || 2;

if (cluster.isPrimary) {
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening === workers) console.log(`address=127.0.0.1:${address.port}`);
  });
  cluster.on('exit', (worker, code) => {
    if (!stopping) { console.error(`b10_ws.js: a worker ended (${code})`); process.exit(1); }
  });
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const { WebSocketServer } = require('ws');
  // port 0 in every worker of a cluster is one shared random port
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/echo' });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
}
