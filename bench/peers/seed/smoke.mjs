// Smoke test of a running seed topology (start.sh first):
//
//   node bench/peers/seed/smoke.mjs <port> [<rundir>]
//
// <port> is nginx's; with <rundir> (start.sh's) it also reads <rundir>/ports and connects one
// subscriber directly to each Node backend. Checks:
//   - GET /healthz through nginx reaches different workers (round robin)
//   - 10 clients on /ws/room through nginx land on different workers (X-Seed-Worker of the 101)
//   - one of them sends 100 numbered text messages; every subscriber (sender included, and the
//     direct ones) receives all 100, in order, exactly once; a client on /ws/other receives none
//   - a binary message (all 256 byte values, 64 KiB) arrives intact and as binary everywhere,
//     and a UTF-8 text message arrives as text
//   - /echo: text comes back as text, binary as binary, byte for byte (also a 512 KiB one)
//   - a bad channel name is refused with 400
// Prints a summary; exits 1 on any failure. Bounded: gives up after 30 s.
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const WebSocket = require('ws'); // the local node_modules next to this file

const PORT = Number(process.argv[2] ?? 18090);
const RUNDIR = process.argv[3];
const HOST = '127.0.0.1';
const N_CLIENTS = 10;
const N_MESSAGES = 100;
const failures = [];
const fail = (msg) => { failures.push(msg); console.error(`FAIL: ${msg}`); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const overall = setTimeout(() => { console.error('FAIL: smoke test timed out after 30 s'); process.exit(1); }, 30000);

function backendPorts() {
  if (!RUNDIR) return [];
  const text = readFileSync(`${RUNDIR}/ports`, 'utf8');
  const m = text.match(/SEED_BACKEND_PORTS="([^"]*)"/);
  return m ? m[1].trim().split(/\s+/).map(Number) : [];
}

function get(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port, path, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// Opens a WebSocket; resolves to { ws, worker, msgs } once open. msgs collects every message.
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 5000 });
    const c = { ws, url, worker: undefined, msgs: [] };
    ws.on('upgrade', (res) => { c.worker = res.headers['x-seed-worker']; });
    ws.on('message', (data, isBinary) => c.msgs.push({ data, isBinary }));
    ws.once('open', () => resolve(c));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`${url}: HTTP ${res.statusCode}`)));
  });
}

async function waitFor(pred, ms) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

const summary = [];
const all = [];
try {
  // 1. healthz through nginx
  const hz = [];
  for (let i = 0; i < 8; i++) {
    const r = await get(PORT, '/healthz');
    if (r.status !== 200) fail(`GET /healthz via nginx: ${r.status}`);
    const j = JSON.parse(r.body);
    if (j.status !== 'ok' || typeof j.worker !== 'number' || typeof j.pid !== 'number') fail(`healthz body ${r.body}`);
    hz.push(j.worker);
  }
  const hzWorkers = new Set(hz);
  if (hzWorkers.size < 2) fail(`/healthz via nginx always reached worker(s) ${[...hzWorkers]}`);
  summary.push(`healthz via nginx: 8 requests reached workers [${hz.join(',')}]`);

  const direct = backendPorts();
  for (const p of direct) {
    const r = await get(p, '/healthz');
    if (r.status !== 200) fail(`GET /healthz on backend port ${p}: ${r.status}`);
  }
  if (direct.length) summary.push(`healthz direct: ${direct.length} backends answer 200`);

  // 2. subscribers: 10 via nginx, one directly on each backend, one on another channel
  const viaNginx = [];
  for (let i = 0; i < N_CLIENTS; i++) viaNginx.push(await open(`ws://${HOST}:${PORT}/ws/room`));
  const directSubs = [];
  for (const p of direct) directSubs.push(await open(`ws://${HOST}:${p}/ws/room`));
  const other = await open(`ws://${HOST}:${PORT}/ws/other`);
  const subs = [...viaNginx, ...directSubs];
  all.push(...subs, other);
  const landed = viaNginx.map((c) => c.worker);
  if (new Set(landed).size < 2) fail(`the ${N_CLIENTS} nginx clients all landed on worker(s) ${[...new Set(landed)]}`);
  summary.push(`${N_CLIENTS} clients via nginx landed on workers [${landed.join(',')}]` +
               (directSubs.length ? `; ${directSubs.length} direct on workers [${directSubs.map((c) => c.worker).join(',')}]` : ''));

  // 3. 100 numbered messages from one client
  const sender = viaNginx[0];
  const t0 = Date.now();
  for (let n = 1; n <= N_MESSAGES; n++) sender.ws.send(`msg-${n}`);
  const got = await waitFor(() => subs.every((c) => c.msgs.length >= N_MESSAGES), 10000);
  await sleep(300); // anything extra (duplicates) would show up now
  const ms = Date.now() - t0;
  let okCount = 0;
  subs.forEach((c, i) => {
    const texts = c.msgs.map((m) => (m.isBinary ? '<binary>' : m.data.toString('utf8')));
    const want = Array.from({ length: N_MESSAGES }, (_, k) => `msg-${k + 1}`);
    const same = texts.length === want.length && texts.every((t, k) => t === want[k]);
    if (same && c.msgs.every((m) => !m.isBinary)) okCount++;
    else fail(`subscriber ${i} (worker ${c.worker}${i >= N_CLIENTS ? ', direct' : ''}) got ${texts.length} ` +
              `messages; first mismatch at ${texts.findIndex((t, k) => t !== want[k])}: ${texts.slice(0, 5).join(' ')} ...`);
  });
  if (!got) fail('not every subscriber got 100 messages within 10 s');
  if (other.msgs.length) fail(`a client on /ws/other received ${other.msgs.length} messages from /ws/room`);
  summary.push(`pub/sub: ${okCount}/${subs.length} subscribers got all ${N_MESSAGES} messages in order exactly once ` +
               `(${ms} ms incl. 300 ms settle); /ws/other got ${other.msgs.length}`);

  // 4. binary and UTF-8 text through pub/sub (sent from a direct subscriber when there is one)
  for (const c of all) c.msgs = [];
  const bin = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(65536 - 256)]);
  const utf = 'grüße ✓ 🚀 \u0000 end';
  const from = directSubs.at(-1) ?? viaNginx.at(-1);
  from.ws.send(bin, { binary: true });
  from.ws.send(utf);
  await waitFor(() => subs.every((c) => c.msgs.length >= 2), 10000);
  await sleep(100);
  let binOk = 0;
  subs.forEach((c, i) => {
    const [b, t] = c.msgs;
    if (c.msgs.length === 2 && b.isBinary && Buffer.compare(b.data, bin) === 0 && !t.isBinary && t.data.toString('utf8') === utf) binOk++;
    else fail(`subscriber ${i}: binary/text check failed (${c.msgs.length} messages, first binary=${b?.isBinary}, ` +
              `len=${b?.data.length}, equal=${b ? Buffer.compare(b.data, bin) === 0 : false}, text=${JSON.stringify(t?.data.toString())})`);
  });
  summary.push(`pub/sub binary: ${binOk}/${subs.length} got the 64 KiB binary intact (as binary) and the UTF-8 text as text`);

  // 5. echo
  const echo = await open(`ws://${HOST}:${PORT}/echo`);
  all.push(echo);
  const big = randomBytes(512 * 1024);
  const small = randomBytes(1000);
  echo.ws.send('hello ✓');
  echo.ws.send(small, { binary: true });
  echo.ws.send(big, { binary: true });
  await waitFor(() => echo.msgs.length >= 3, 10000);
  const [e1, e2, e3] = echo.msgs;
  const echoOk = echo.msgs.length === 3 && !e1.isBinary && e1.data.toString() === 'hello ✓' &&
    e2.isBinary && e2.data.equals(small) && e3.isBinary && e3.data.equals(big);
  if (!echoOk) fail(`echo mismatch: ${echo.msgs.length} messages, ${echo.msgs.map((m) => `${m.isBinary ? 'bin' : 'text'}:${m.data.length}`).join(' ')}`);
  summary.push(`echo via nginx (worker ${echo.worker}): text as text, 1000 B and 512 KiB binary as binary: ${echoOk ? 'ok' : 'FAILED'}`);

  // 6. a bad channel name
  try {
    const bad = await open(`ws://${HOST}:${PORT}/ws/bad%20name`);
    all.push(bad);
    fail('/ws/bad%20name was accepted');
  } catch (e) {
    if (!/HTTP 400/.test(e.message)) fail(`/ws/bad%20name: ${e.message} (wanted HTTP 400)`);
    else summary.push('bad channel name: 400');
  }
} catch (e) {
  fail(`error: ${e.stack ?? e}`);
}

for (const c of all) c.ws.close(1000);
await sleep(100);
clearTimeout(overall);
console.log(summary.map((s) => `  ${s}`).join('\n'));
if (failures.length) {
  console.log(`smoke: FAILED (${failures.length} failures)`);
  process.exit(1);
}
console.log('smoke: OK');
process.exit(0);
