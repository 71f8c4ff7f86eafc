// Browser test of the admin status page (GET /status on the admin listener, rendered by the
// supervisor).
//
// Starts a real sockherd node with 3 workers, its admin listener and control socket on a free
// port and in a temp dir, opens http://127.0.0.1:ADMIN/status in headless Chromium and checks the
// DOM: one `tr.worker` row per slot (data-id 0, 1, 2), all data-state "up", each naming its pid;
// the listener row; the node summary naming the config file. Then SIGKILLs worker 1 and waits for
// the self-refreshing page to show slot 1 up again with a new pid. Screenshot: status.png.
//
//   SOCKHERD_BINARY=/path/to/sockherd node --test status.test.mjs
//
// Env: as lib.mjs (SOCKHERD_BINARY, SOCKHERD_ARTIFACTS_DIR, CHROMIUM).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  ARTIFACTS, HOST, checkEnvironment, cleanUp, freePort, get, killGroup, nodeConfig, openBrowser,
  sleep, startNode, stopNode,
} from "./lib.mjs";

const WORKERS = 3;
const state = {};
process.on("exit", () => {
  if (state.browserProc && !state.browserProc.exited) killGroup(state.browserProc);
  if (state.node && !state.node.exited) killGroup(state.node);
});

/** GET /status.json on the admin port, parsed; null if it does not answer 200 with JSON. */
async function statusJson() {
  try {
    const res = await get(state.adminPort, "/status.json", 2000);
    return res.status === 200 ? JSON.parse(res.body) : null;
  } catch {
    return null;
  }
}

/** Polls status.json until `pred` holds (resolves it) or `ms` pass (rejects with the last one). */
async function waitStatus(pred, ms, what) {
  const deadline = Date.now() + ms;
  let last = null;
  for (;;) {
    if (state.node.exited) {
      throw new Error(`sockherd exited (${JSON.stringify(state.node.exited)}):\n${state.node.output}`);
    }
    last = await statusJson();
    if (last && pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms; last status.json: ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

const allUp = (st) =>
  st.workers_up === WORKERS && st.workers.length === WORKERS && st.workers.every((w) => w.state === "up" && w.pid);

/** The worker rows as the page shows them now: [{ id, state, text }]; null while it is reloading. */
async function pageRows(page) {
  try {
    return await page.evaluate(() => [...document.querySelectorAll("#workers tr.worker")].map((tr) => ({
      id: tr.dataset.id, state: tr.dataset.state, text: tr.textContent,
    })));
  } catch {
    return null; // the page navigated (its own refresh) while we looked
  }
}

/** Polls the page until `pred(rows)` holds; the page reloads itself, so no reload from here. */
async function waitRows(page, pred, ms, what) {
  const deadline = Date.now() + ms;
  let rows = null;
  for (;;) {
    rows = await pageRows(page);
    if (rows && pred(rows)) return rows;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms; rows: ${JSON.stringify(rows)}`);
    await sleep(200);
  }
}

before(async () => {
  checkEnvironment();
  state.dir = fs.mkdtempSync(path.join(os.tmpdir(), "sockherd-browser-status-"));
  state.port = await freePort();
  state.adminPort = await freePort();
  const config = nodeConfig({
    dir: state.dir, port: state.port, adminPort: state.adminPort, workers: WORKERS,
    extra: [
      "[supervisor]", 'heartbeat_interval = "250ms"', 'drain_timeout = "1s"',
      'restart_backoff = { min = "100ms", max = "1s" }',
    ],
  });
  state.node = startNode(state.dir, config, "sockherd-browser-status-node.log");
  state.initial = await waitStatus(allUp, 20000, `${WORKERS} workers up`);

  await openBrowser(state, "sockherd-browser-status-chromium.log");
});

after(() => cleanUp(state));

test("the status page lists every worker up, the listener and the config", { timeout: 60000 }, async () => {
  const ctx = await state.browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  state.page = page;

  const url = `http://${HOST}:${state.adminPort}/status`;
  const res = await page.goto(url, { waitUntil: "domcontentloaded", timeout: 10000 });
  assert.equal(res.status(), 200, `GET ${url}`);
  assert.match(res.headers()["content-type"] ?? "", /text\/html/);

  const rows = await waitRows(page, (r) => r.length === WORKERS && r.every((w) => w.state === "up"), 20000,
    `${WORKERS} worker rows, all up`);
  assert.deepEqual(rows.map((r) => r.id).sort(), ["0", "1", "2"]);
  // Each row names the pid status.json has for that slot.
  const st = await waitStatus(allUp, 5000, "status.json with every worker up");
  for (const w of st.workers) {
    const row = rows.find((r) => r.id === String(w.id));
    assert.ok(row, `no row for worker ${w.id}`);
    assert.ok(row.text.includes(String(w.pid)), `row ${w.id} does not show pid ${w.pid}: ${JSON.stringify(row.text)}`);
  }

  const listeners = page.locator("#listeners tr.listener");
  await listeners.first().waitFor({ state: "attached", timeout: 10000 });
  assert.equal(await listeners.count(), 1);
  const listenerText = await listeners.first().textContent();
  assert.ok(listenerText.includes(`${HOST}:${state.port}`), `listener row without its address: ${listenerText}`);

  const summary = await page.locator("#node").textContent({ timeout: 10000 });
  assert.ok(summary.includes(state.node.configPath),
    `#node does not name ${state.node.configPath}: ${JSON.stringify(summary)}`);

  const shot = path.join(ARTIFACTS, "status.png");
  fs.rmSync(shot, { force: true });
  await page.screenshot({ path: shot, fullPage: true, timeout: 10000 });
  assert.ok(fs.existsSync(shot) && fs.statSync(shot).size > 0, `screenshot ${shot} missing or empty`);
  console.log(`screenshot: ${shot}`);
  assert.deepEqual(problems, [], "page errors");
});

test("the page refreshes itself and shows a killed worker replaced", { timeout: 60000 }, async () => {
  assert.ok(state.page, "the first test did not get far enough");
  const page = state.page;
  const st = await waitStatus(allUp, 5000, "every worker up");
  const old = st.workers.find((w) => w.id === 1).pid;
  process.kill(old, "SIGKILL"); // a worker of the node this test started
  const replaced = await waitStatus((s) => allUp(s) && s.workers.find((w) => w.id === 1).pid !== old, 15000,
    "slot 1 up with a new pid");
  const pid = replaced.workers.find((w) => w.id === 1).pid;
  // No reload from here: the page's own refresh has to bring the new pid.
  await waitRows(page, (r) => r.length === WORKERS && r.every((w) => w.state === "up") &&
    r.find((w) => w.id === "1")?.text.includes(String(pid)), 30000, `row 1 showing the new pid ${pid}`);
  await page.screenshot({ path: path.join(ARTIFACTS, "status-after-restart.png"), fullPage: true, timeout: 10000 });
});

test("SIGTERM stops the node with exit code 0", { timeout: 15000 }, async () => {
  await stopNode(state.node);
});
