'use strict';
// The seed topology's backend: one of four Node.js processes behind nginx, using the `ws` npm
// package for WebSockets and Redis pub/sub (the `redis` v4 client) to broadcast across processes.
// It speaks sockherd's protocol so the same load generator drives both:
//
//   (every response, the 101 included, carries X-Seed-Worker: <index>)
//   GET /healthz      200 {"status":"ok","worker":<index>,"pid":<pid>}
//   ws  /echo[/...]   every message comes back, text as text, binary as binary
//   ws  /ws/<channel> raw pub/sub: the connection subscribes to <channel>; every message it sends
//                     goes to every subscriber of <channel> on every process, the sender included
//
// Cross-process delivery: each message is PUBLISHed to Redis channel "seed:<channel>" as one byte
// of frame type ('t' text, 'b' binary) followed by the payload. Each process has ONE subscriber
// connection and SUBSCRIBEs per channel while it has local subscribers (UNSUBSCRIBE when the last
// one leaves), so like sockherd a process only receives channels it has interest in. Every
// delivery, local ones included, goes through Redis: the sender receives its own message back
// from Redis, in order with everyone else's.
//
// The WebSocket handshake for /ws/<channel> is answered only after this process's SUBSCRIBE for
// the channel has been acknowledged by Redis, so a message published once the client is connected
// is never missed (sockherd also answers its handshake once the subscription is live).
//
// Usage: node app.js [port] [worker]   (or env PORT, WORKER; REDIS_URL, default redis://127.0.0.1:6379)
// Optional env: SEED_MAX_MESSAGE (bytes, default 1 MiB like sockherd's max_message_size),
//               SEED_SEND_QUEUE_LIMIT (bytes, default 4 MiB like sockherd's send_queue_limit: a
//               subscriber whose unsent data exceeds it is closed with 1008 "slow consumer").

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');
const { createClient } = require('redis');

const PORT = Number(process.argv[2] ?? process.env.PORT ?? 8081);
const WORKER = Number(process.argv[3] ?? process.env.WORKER ?? 0);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const MAX_MESSAGE = Number(process.env.SEED_MAX_MESSAGE ?? 1024 * 1024);
const SEND_QUEUE_LIMIT = Number(process.env.SEED_SEND_QUEUE_LIMIT ?? 4 * 1024 * 1024);
const REDIS_PREFIX = 'seed:';
const TYPE_TEXT = 0x74;   // 't'
const TYPE_BINARY = 0x62; // 'b'
const CHANNEL_RE = /^[A-Za-z0-9\-_.:@]{1,200}$/; // sockherd's valid_channel_name

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  console.error(`seed[${WORKER}]: bad port ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}

function log(...args) {
  console.error(`seed[${WORKER}] pid ${process.pid}:`, ...args);
}

// --- Redis -------------------------------------------------------------------------------------

const pub = createClient({ url: REDIS_URL });
const sub = pub.duplicate();
pub.on('error', (err) => log('redis publisher:', err.message));
sub.on('error', (err) => log('redis subscriber:', err.message));

// channel name -> { name, clients: Set<WebSocket>, refs, subscribed, chain }
// refs counts connections holding the channel (handshaking or open); SUBSCRIBE / UNSUBSCRIBE for a
// channel are serialised on its promise chain so they never cross.
const channels = new Map();

function onRedisMessage(message, redisChannel) {
  const name = redisChannel.toString('latin1').slice(REDIS_PREFIX.length);
  const ch = channels.get(name);
  if (!ch || ch.clients.size === 0 || message.length === 0) return;
  const binary = message[0] === TYPE_BINARY;
  const payload = message.subarray(1);
  for (const ws of ch.clients) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    if (ws.bufferedAmount + payload.length > SEND_QUEUE_LIMIT && ws.bufferedAmount > 0) {
      ch.clients.delete(ws); // no more deliveries; released on 'close'
      ws.close(1008, 'slow consumer');
      continue;
    }
    ws.send(payload, { binary });
  }
}

function acquire(name) {
  let ch = channels.get(name);
  if (!ch) {
    ch = { name, clients: new Set(), refs: 0, subscribed: false, chain: Promise.resolve() };
    channels.set(name, ch);
  }
  ch.refs++;
  const step = ch.chain.then(async () => {
    if (!ch.subscribed) {
      await sub.subscribe(REDIS_PREFIX + name, onRedisMessage, true); // true: Buffer messages
      ch.subscribed = true;
    }
  });
  ch.chain = step.catch(() => {});
  return { ch, ready: step };
}

function release(ch) {
  ch.refs--;
  if (ch.refs > 0) return;
  ch.chain = ch.chain
    .then(async () => {
      if (ch.refs > 0) return;
      if (ch.subscribed) {
        await sub.unsubscribe(REDIS_PREFIX + ch.name);
        ch.subscribed = false;
      }
      if (ch.refs === 0 && channels.get(ch.name) === ch) channels.delete(ch.name);
    })
    .catch((err) => log(`unsubscribe ${ch.name}:`, err.message));
}

function publish(name, data, isBinary) {
  const frame = Buffer.allocUnsafe(data.length + 1);
  frame[0] = isBinary ? TYPE_BINARY : TYPE_TEXT;
  data.copy(frame, 1);
  pub.publish(REDIS_PREFIX + name, frame).catch((err) => log(`publish ${name}:`, err.message));
}

// --- HTTP --------------------------------------------------------------------------------------

let draining = false;

function reply(res, status, body, type = 'text/plain; charset=utf-8', extra = {}) {
  res.writeHead(status, {
    'content-type': type, 'content-length': Buffer.byteLength(body), 'x-seed-worker': WORKER, ...extra,
  });
  res.end(body);
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

const server = http.createServer((req, res) => {
  const path = pathOf(req.url ?? '/');
  if (path === '/healthz') {
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return reply(res, 405, 'method not allowed\n', undefined, { allow: 'GET, HEAD' });
    const body = JSON.stringify({ status: draining ? 'draining' : 'ok', worker: WORKER, pid: process.pid }) + '\n';
    return reply(res, draining ? 503 : 200, body, 'application/json', { 'cache-control': 'no-store' });
  }
  if (routeOf(path)) return reply(res, 426, 'this is a WebSocket endpoint\n', undefined, { upgrade: 'websocket' });
  reply(res, 404, 'not found\n');
});

const wss = new WebSocketServer({
  noServer: true,
  maxPayload: MAX_MESSAGE,
  perMessageDeflate: false,
  clientTracking: true, // for the 1001 close on shutdown
});
// Like sockherd's X-Sockherd-Worker: every response, the 101 included, names the process.
wss.on('headers', (headers) => headers.push(`X-Seed-Worker: ${WORKER}`));

function refuse(socket, status, text, body) {
  if (socket.destroyed) return;
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
             `X-Seed-Worker: ${WORKER}\r\n` +
             `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
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

  const { ch, ready } = acquire(name);
  let held = true; // this connection holds one ref on ch until it is released exactly once
  const drop = () => { if (held) { held = false; release(ch); } };
  socket.once('close', drop); // the client left before (or during) the handshake

  ready.then(
    () => {
      if (socket.destroyed || draining) {
        drop();
        return refuse(socket, 503, 'Service Unavailable', 'draining\n');
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        socket.off('close', drop);
        ch.clients.add(ws);
        ws.on('message', (data, isBinary) => publish(name, data, isBinary));
        ws.on('close', () => { ch.clients.delete(ws); drop(); });
        ws.on('error', () => {});
      });
    },
    (err) => {
      log(`subscribe ${name}:`, err.message);
      drop();
      refuse(socket, 503, 'Service Unavailable', 'pub/sub backend unavailable\n');
    },
  );
});

server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});

// --- start / stop ------------------------------------------------------------------------------

async function main() {
  await Promise.all([pub.connect(), sub.connect()]);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: PORT, backlog: 4096 }, resolve);
  });
  server.on('error', (err) => log('server:', err.message));
  log(`listening on 127.0.0.1:${PORT}, redis ${REDIS_URL}`);
}

function shutdown(signal) {
  if (draining) return;
  draining = true;
  log(`${signal}: closing`);
  server.close();
  for (const ws of wss.clients) ws.close(1001, 'server is shutting down');
  const done = () => process.exit(0);
  setTimeout(done, 2000).unref();
  Promise.allSettled([pub.quit(), sub.quit()]).then(() => {
    // give the close frames a moment, then go
    setTimeout(done, wss.clients.size ? 500 : 0).unref();
  });
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

main().catch((err) => {
  log('startup failed:', err.message);
  process.exit(1);
});
