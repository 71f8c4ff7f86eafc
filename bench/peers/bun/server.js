// Bun's built-in WebSocket server (Bun.serve, built on uWebSockets) with its built-in pub/sub: a
// benchmark peer of sockherd. One process, one thread for the server (Bun runs JavaScript on one
// thread; there is no worker pool here). It speaks sockherd's protocol, so the same load generator
// drives both:
//
//   (every HTTP response carries X-Bun-Worker: 0)
//   GET /healthz      200 {"status":"ok","worker":0,"pid":<pid>}
//   ws  /echo[/...]   every message comes back, text as text, binary as binary
//   ws  /ws/<channel> raw pub/sub: the connection subscribes to topic <channel> (ws.subscribe);
//                     every message it sends goes to every subscriber, the sender included
//                     (server.publish, which unlike ws.publish does not skip the sender)
//
// Usage: bun server.js <port>   (or env PORT)
// Optional env: BUN_PEER_MAX_MESSAGE (bytes, default 1 MiB like sockherd's max_message_size),
//               BUN_PEER_SEND_QUEUE_LIMIT (bytes, default 4 MiB like sockherd's send_queue_limit:
//               past it a send is dropped and the connection closed, closeOnBackpressureLimit).
// No permessage-deflate (sockherd's default), idle timeout 60 s with Bun's automatic pings (like
// sockherd's idle_timeout and ping_interval). SIGTERM / SIGINT: the server stops, open WebSockets
// are closed (1001), the process exits.

const PORT = Number(process.argv[2] ?? process.env.PORT ?? 8083);
const MAX_MESSAGE = Number(process.env.BUN_PEER_MAX_MESSAGE ?? 1024 * 1024);
const SEND_QUEUE_LIMIT = Number(process.env.BUN_PEER_SEND_QUEUE_LIMIT ?? 4 * 1024 * 1024);
const CHANNEL_RE = /^[A-Za-z0-9\-_.:@]{1,200}$/; // sockherd's valid_channel_name

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  console.error(`bun peer: usage: bun server.js <port>`);
  process.exit(2);
}

const log = (...a) => console.error(`bun peer pid ${process.pid}:`, ...a);
const HEADERS = { 'x-bun-worker': '0' };
let draining = false;

function text(status, body, extra = {}) {
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...HEADERS, ...extra } });
}

// "/echo" matches "/echo" and "/echo/x", not "/echoes" (sockherd's route matching).
function routeOf(path) {
  if (path === '/echo' || path.startsWith('/echo/')) return { kind: 'echo' };
  if (path.startsWith('/ws/')) return { kind: 'pubsub', channel: path.slice(4) };
  return null;
}

// The path of a request target without parsing a whole URL (cheaper per handshake).
function pathOf(url) {
  let start = url.indexOf('://');
  start = start < 0 ? 0 : url.indexOf('/', start + 3);
  if (start < 0) return '/';
  let end = url.length;
  for (const c of ['?', '#']) {
    const i = url.indexOf(c, start);
    if (i >= 0 && i < end) end = i;
  }
  return url.slice(start, end);
}

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: PORT,
  fetch(req, srv) {
    const path = pathOf(req.url);
    if (path === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed\n', { allow: 'GET, HEAD' });
      return new Response(JSON.stringify({ status: draining ? 'draining' : 'ok', worker: 0, pid: process.pid }) + '\n', {
        status: draining ? 503 : 200,
        headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...HEADERS },
      });
    }
    const route = routeOf(path);
    if (!route) return text(404, 'not found\n');
    if (route.kind === 'pubsub' && !CHANNEL_RE.test(route.channel))
      return text(400, 'bad channel name: 1 to 200 bytes of A-Z a-z 0-9 - _ . : @\n');
    if (draining) return text(503, 'draining\n');
    if (srv.upgrade(req, { data: route })) return undefined;
    return text(426, 'this is a WebSocket endpoint\n', { upgrade: 'websocket' });
  },
  websocket: {
    maxPayloadLength: MAX_MESSAGE,
    backpressureLimit: SEND_QUEUE_LIMIT,
    closeOnBackpressureLimit: true,
    perMessageDeflate: false,
    idleTimeout: 60,
    sendPings: true,
    publishToSelf: true,
    open(ws) {
      if (ws.data.kind === 'pubsub') ws.subscribe(ws.data.channel);
    },
    message(ws, message) {
      if (ws.data.kind === 'echo') ws.send(message);
      else server.publish(ws.data.channel, message);
    },
  },
});

log(`listening on 127.0.0.1:${server.port} (Bun ${Bun.version})`);

function shutdown(signal) {
  if (draining) return;
  draining = true;
  log(`${signal}: closing`);
  server.stop(true); // stop listening and close the open connections
  setTimeout(() => process.exit(0), 500);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
