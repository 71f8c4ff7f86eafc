'use strict';
// The PM2 peer's app: a WebSocket echo on the `ws` npm package, run by PM2 in cluster mode
// (`pm2 start echo.js -i 4 -- <port>`): the PM2 daemon is the cluster primary and hands
// connections to the instances round robin, every instance listens on the same port.
//
//   GET /healthz      200 {"status":"ok","worker":<instance>,"pid":<pid>}
//   ws  /echo[/...]   every message comes back, text as text, binary as binary
//   anything else     404 (426 for /echo without Upgrade)
//
// Shutdown, which is what `pm2 reload` does to an old instance once its replacement listens:
// SIGINT (or SIGTERM) stops accepting, closes every WebSocket with 1001 (going away) and exits
// once they are gone, at the latest after 1 s (PM2 sends SIGKILL after its kill_timeout, 1.6 s by
// default). A client has to reconnect; there is no way to hand an open socket to the new instance.
//
// Usage: node echo.js [port]   (or env PORT; the instance number comes from NODE_APP_INSTANCE)

const http = require('node:http');
const { WebSocketServer } = require('ws');

const PORT = Number(process.argv[2] ?? process.env.PORT ?? 8081);
const WORKER = Number(process.env.NODE_APP_INSTANCE ?? 0);
const MAX_MESSAGE = 1024 * 1024; // like sockherd's max_message_size

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  console.error(`echo[${WORKER}]: bad port ${process.argv[2] ?? process.env.PORT}`);
  process.exit(2);
}

let draining = false;

function isEcho(url) {
  const q = url.search(/[?#]/);
  const path = q < 0 ? url : url.slice(0, q);
  return path === '/echo' || path.startsWith('/echo/');
}

const server = http.createServer((req, res) => {
  const send = (status, type, body) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'x-pm2-worker': WORKER });
    res.end(body);
  };
  if (req.url === '/healthz')
    return send(draining ? 503 : 200, 'application/json',
      JSON.stringify({ status: draining ? 'draining' : 'ok', worker: WORKER, pid: process.pid }) + '\n');
  if (isEcho(req.url ?? '/')) return send(426, 'text/plain', 'this is a WebSocket endpoint\n');
  send(404, 'text/plain', 'not found\n');
});

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE, perMessageDeflate: false });
wss.on('headers', (headers) => headers.push(`X-PM2-Worker: ${WORKER}`));

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  if (draining || !isEcho(req.url ?? '/')) {
    const [status, body] = draining ? ['503 Service Unavailable', 'draining\n'] : ['404 Not Found', 'not found\n'];
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => {});
  });
});

server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});

function shutdown() {
  if (draining) return;
  draining = true;
  server.close();
  for (const ws of wss.clients) ws.close(1001, 'going away');
  const poll = setInterval(() => { if (wss.clients.size === 0) process.exit(0); }, 20);
  setTimeout(() => { clearInterval(poll); process.exit(0); }, 1000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

server.listen({ host: '127.0.0.1', port: PORT, backlog: 4096 });
