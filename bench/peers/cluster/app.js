'use strict';
// Node's `cluster` module with the `ws` package: a benchmark peer of sockherd. The primary forks
// WORKERS (4) workers; they all listen on the same port, and with the cluster module's default
// round-robin policy on Linux (cluster.SCHED_RR) the primary owns the listening socket, accepts
// every connection and hands it to the workers in turn — the design of sockherd's hand-off mode,
// in Node. It speaks sockherd's protocol, so the same load generator drives both:
//
//   (every response, the 101 included, carries X-Cluster-Worker: <index>)
//   GET /healthz      200 {"status":"ok","worker":<index>,"pid":<pid>}
//   ws  /echo[/...]   every message comes back, text as text, binary as binary
//   ws  /ws/<channel> raw pub/sub: the connection subscribes to <channel>; every message it sends
//                     goes to every subscriber of <channel> in every worker, the sender included
//
// Broadcast across workers goes through the primary over the cluster IPC channels (no Redis):
// a worker delivers a message to its own subscribers at once and sends it to the primary, which
// forwards it to every other worker that has subscribers of that channel (workers tell the
// primary when their first subscriber of a channel arrives and when their last one leaves). The
// IPC channels use the 'advanced' serialization (structured clone), so payloads travel as bytes.
//
// Usage: node app.js <port> [workers]   (or env PORT, WORKERS)
// Optional env: CLUSTER_MAX_MESSAGE (bytes, default 1 MiB like sockherd's max_message_size),
//               CLUSTER_SEND_QUEUE_LIMIT (bytes, default 4 MiB like sockherd's send_queue_limit: a
//               subscriber whose unsent data exceeds it is closed with 1008 "slow consumer").
// A worker that dies is forked again (after 100 ms), as a cluster app's primary usually does.
// SIGTERM / SIGINT to the primary: the workers close their WebSockets with 1001 and exit.

const cluster = require('node:cluster');
const http = require('node:http');

const PORT = Number(process.argv[2] ?? process.env.PORT ?? 8082);
const WORKERS = Number(process.argv[3] ?? process.env.WORKERS ?? 4);
const MAX_MESSAGE = Number(process.env.CLUSTER_MAX_MESSAGE ?? 1024 * 1024);
const SEND_QUEUE_LIMIT = Number(process.env.CLUSTER_SEND_QUEUE_LIMIT ?? 4 * 1024 * 1024);
const CHANNEL_RE = /^[A-Za-z0-9\-_.:@]{1,200}$/; // sockherd's valid_channel_name

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535 || !Number.isInteger(WORKERS) || WORKERS < 1) {
  console.error(`cluster: usage: node app.js <port> [workers]`);
  process.exit(2);
}

cluster.schedulingPolicy = cluster.SCHED_RR; // the default on Linux; said explicitly

if (cluster.isPrimary) runPrimary();
else runWorker();

// --- primary -------------------------------------------------------------------------------------

function runPrimary() {
  const log = (...a) => console.error(`cluster primary pid ${process.pid}:`, ...a);
  cluster.setupPrimary({ serialization: 'advanced' });
  // channel name -> Set of cluster.Worker with local subscribers
  const interest = new Map();
  const slots = new Array(WORKERS).fill(null); // worker index -> cluster.Worker
  let stopping = false;

  function forget(worker) {
    for (const [name, set] of interest) {
      set.delete(worker);
      if (set.size === 0) interest.delete(name);
    }
  }

  function fork(index) {
    const worker = cluster.fork({ CLUSTER_WORKER_INDEX: String(index) });
    slots[index] = worker;
    worker.on('message', (m) => {
      if (!m || typeof m !== 'object') return;
      if (m.t === 'sub') {
        let set = interest.get(m.c);
        if (!set) interest.set(m.c, (set = new Set()));
        set.add(worker);
      } else if (m.t === 'unsub') {
        const set = interest.get(m.c);
        if (set) {
          set.delete(worker);
          if (set.size === 0) interest.delete(m.c);
        }
      } else if (m.t === 'pub') {
        const set = interest.get(m.c);
        if (!set) return;
        for (const w of set) {
          if (w !== worker && w.isConnected()) w.send(m);
        }
      }
    });
    worker.on('exit', (code, signal) => {
      forget(worker);
      if (slots[index] === worker) slots[index] = null;
      if (stopping) {
        if (slots.every((s) => s === null)) process.exit(0);
        return;
      }
      log(`worker ${index} (pid ${worker.process.pid}) exited (${signal ?? code}); forking it again`);
      setTimeout(() => { if (!stopping) fork(index); }, 100);
    });
  }

  for (let i = 0; i < WORKERS; i++) fork(i);
  log(`${WORKERS} workers on 127.0.0.1:${PORT} (round robin by the primary)`);

  function shutdown(signal) {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping the workers`);
    for (const w of slots) if (w) w.process.kill('SIGTERM');
    if (slots.every((s) => s === null)) process.exit(0);
    setTimeout(() => process.exit(0), 3000).unref();
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

// --- worker --------------------------------------------------------------------------------------

function runWorker() {
  const { WebSocketServer, WebSocket } = require('ws');
  const INDEX = Number(process.env.CLUSTER_WORKER_INDEX ?? cluster.worker.id - 1);
  const log = (...a) => console.error(`cluster[${INDEX}] pid ${process.pid}:`, ...a);
  const channels = new Map(); // channel name -> Set<WebSocket> (local subscribers)
  let draining = false;

  function deliver(name, data, isBinary) {
    const set = channels.get(name);
    if (!set) return;
    for (const ws of set) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      if (ws.bufferedAmount + data.length > SEND_QUEUE_LIMIT && ws.bufferedAmount > 0) {
        set.delete(ws); // no more deliveries; 'close' releases the rest
        ws.close(1008, 'slow consumer');
        continue;
      }
      ws.send(data, { binary: isBinary });
    }
  }

  process.on('message', (m) => {
    if (m && m.t === 'pub') deliver(m.c, Buffer.from(m.d.buffer, m.d.byteOffset, m.d.byteLength), m.b);
  });

  function join(name, ws) {
    let set = channels.get(name);
    if (!set) {
      channels.set(name, (set = new Set()));
      process.send({ t: 'sub', c: name });
    }
    set.add(ws);
  }

  function leave(name, ws) {
    const set = channels.get(name);
    if (!set || !set.delete(ws)) return;
    if (set.size === 0) {
      channels.delete(name);
      if (process.connected) process.send({ t: 'unsub', c: name });
    }
  }

  function publish(name, data, isBinary) {
    deliver(name, data, isBinary); // this worker's subscribers, the sender included
    process.send({ t: 'pub', c: name, d: data, b: isBinary });
  }

  function pathOf(url) {
    const q = url.search(/[?#]/);
    return q < 0 ? url : url.slice(0, q);
  }

  // "/echo" matches "/echo" and "/echo/x", not "/echoes" (sockherd's route matching).
  function routeOf(path) {
    if (path === '/echo' || path.startsWith('/echo/')) return { kind: 'echo' };
    if (path.startsWith('/ws/')) return { kind: 'pubsub', channel: path.slice(4) };
    return null;
  }

  function reply(res, status, body, type = 'text/plain; charset=utf-8', extra = {}) {
    res.writeHead(status, {
      'content-type': type, 'content-length': Buffer.byteLength(body), 'x-cluster-worker': INDEX, ...extra,
    });
    res.end(body);
  }

  const server = http.createServer((req, res) => {
    const path = pathOf(req.url ?? '/');
    if (path === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return reply(res, 405, 'method not allowed\n', undefined, { allow: 'GET, HEAD' });
      const body = JSON.stringify({ status: draining ? 'draining' : 'ok', worker: INDEX, pid: process.pid }) + '\n';
      return reply(res, draining ? 503 : 200, body, 'application/json', { 'cache-control': 'no-store' });
    }
    if (routeOf(path)) return reply(res, 426, 'this is a WebSocket endpoint\n', undefined, { upgrade: 'websocket' });
    reply(res, 404, 'not found\n');
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE, perMessageDeflate: false, clientTracking: true });
  wss.on('headers', (headers) => headers.push(`X-Cluster-Worker: ${INDEX}`));

  function refuse(socket, status, text, body) {
    if (socket.destroyed) return;
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
               `X-Cluster-Worker: ${INDEX}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    const route = routeOf(pathOf(req.url ?? '/'));
    if (!route) return refuse(socket, 404, 'Not Found', 'not found\n');
    if (draining) return refuse(socket, 503, 'Service Unavailable', 'draining\n');
    if (route.kind === 'echo') {
      return wss.handleUpgrade(req, socket, head, (ws) => {
        ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
        ws.on('error', () => {});
      });
    }
    const name = route.channel;
    if (!CHANNEL_RE.test(name))
      return refuse(socket, 400, 'Bad Request', 'bad channel name: 1 to 200 bytes of A-Z a-z 0-9 - _ . : @\n');
    wss.handleUpgrade(req, socket, head, (ws) => {
      // Subscribed locally in the same tick as the 101 is written, so no later message of this
      // worker is missed; other workers learn of the interest through the primary a moment later
      // (the benchmark opens every subscriber before it publishes).
      join(name, ws);
      ws.on('message', (data, isBinary) => publish(name, data, isBinary));
      ws.on('close', () => leave(name, ws));
      ws.on('error', () => {});
    });
  });

  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  server.listen({ host: '127.0.0.1', port: PORT, backlog: 4096 }, () => log(`listening (via the primary)`));
  server.on('error', (err) => { log('server:', err.message); process.exit(1); });

  function shutdown() {
    if (draining) return;
    draining = true;
    server.close();
    for (const ws of wss.clients) ws.close(1001, 'server is shutting down');
    const done = () => process.exit(0);
    setTimeout(done, wss.clients.size ? 500 : 0).unref();
    setTimeout(done, 2000).unref();
  }
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', () => {}); // the primary decides; a terminal's ^C reaches every process
  process.on('disconnect', () => process.exit(0)); // the primary is gone
}
