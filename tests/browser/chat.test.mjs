// Browser test of the demo chat page (etc/www/index.html, compiled into the binary).
//
// Starts a real sockherd node (2 workers, round-robin) on a free loopback port, drives
// headless Chromium (the system's /usr/bin/chromium, through playwright-core over CDP) with
// two independent browser contexts whose WebSockets land on DIFFERENT workers, and checks that
// a chat message typed in either page shows up in both. Ends with SIGTERM: the node must exit 0.
//
//   SOCKHERD_BINARY=/path/to/sockherd node --test chat.test.mjs
//
// Env: SOCKHERD_BINARY (required), SOCKHERD_ARTIFACTS_DIR (screenshot + logs; default os.tmpdir()),
//      CHROMIUM (default /usr/bin/chromium). The node gets its own admin port and control socket.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  ARTIFACTS, HOST, checkEnvironment, cleanUp, freePort, get, killGroup, nodeConfig, openBrowser,
  sleep, startNode as startSockherd, stopNode,
} from "./lib.mjs";

const state = {};
process.on("exit", () => {
  if (state.browserProc && !state.browserProc.exited) killGroup(state.browserProc);
  if (state.node && !state.node.exited) killGroup(state.node);
});

/** Starts sockherd on state.port; resolves once /healthz has answered 200 from both workers. */
async function startNode(logName) {
  const config = nodeConfig({
    dir: state.dir, port: state.port, adminPort: state.adminPort, workers: 2,
    extra: ["[scheduler]", 'policy = "round-robin"', "", "[supervisor]", 'drain_timeout = "1s"'],
  });
  const node = startSockherd(state.dir, config, logName);
  state.node = node;
  const seen = new Set(); // round-robin alternates, so both workers answer within a few requests
  const deadline = Date.now() + 15000;
  while (seen.size < 2) {
    if (node.exited) throw new Error(`sockherd exited early (${JSON.stringify(node.exited)}):\n${node.output}`);
    if (Date.now() > deadline) throw new Error(`sockherd did not answer /healthz from 2 workers in 15 s:\n${node.output}`);
    try {
      const res = await get(state.port, "/healthz");
      if (res.status === 200) seen.add(JSON.parse(res.body).worker);
    } catch { /* not up yet */ }
    if (seen.size < 2) await sleep(100);
  }
  return node;
}

before(async () => {
  checkEnvironment();
  state.dir = fs.mkdtempSync(path.join(os.tmpdir(), "sockherd-browser-"));

  state.port = await freePort();
  state.adminPort = await freePort();
  state.node = await startNode("sockherd-browser-node.log");

  // The browser: our own Chromium with a fresh profile, driven over CDP on loopback.
  await openBrowser(state, "sockherd-browser-chromium.log");
});

after(() => cleanUp(state));

/** Waits until the page's chat subscription is live; returns the worker slot from #status. */
async function liveWorker(page, what) {
  try {
    await page.waitForFunction(() => {
      const s = document.getElementById("status");
      return s && /\bworker \d+\b/.test(s.textContent) && !document.getElementById("send").disabled;
    }, null, { timeout: 10000, polling: 50 });
  } catch (err) {
    const text = await page.locator("#status").textContent({ timeout: 1000 }).catch(() => "?");
    throw new Error(`${what}: chat not live within 10 s (#status: ${JSON.stringify(text)}): ${err.message}`);
  }
  const text = await page.locator("#status").textContent({ timeout: 1000 });
  return Number(/\bworker (\d+)\b/.exec(text)[1]);
}

async function send(page, text) {
  await page.fill("#text", text, { timeout: 5000 });
  await page.click("#send", { timeout: 5000 });
}

/** The .msg element in #messages that contains `text` (waits for it). */
async function message(page, text, what) {
  const loc = page.locator("#messages .msg").filter({ hasText: text });
  try {
    await loc.waitFor({ state: "visible", timeout: 10000 });
  } catch (err) {
    throw new Error(`${what}: message ${JSON.stringify(text)} did not appear within 10 s: ${err.message}`);
  }
  return loc;
}

test("two tabs on different workers chat with each other", { timeout: 45000 }, async () => {
  const url = `http://${HOST}:${state.port}/`;
  const ctx1 = await state.browser.newContext({ viewport: { width: 1000, height: 760 } });
  const ctx2 = await state.browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page1 = await ctx1.newPage();
  const page2 = await ctx2.newPage();
  const problems = [];
  for (const [i, p] of [[1, page1], [2, page2]]) {
    p.on("pageerror", (e) => problems.push(`page${i}: ${e.message}`));
    p.on("console", (m) => { if (m.type() === "error") problems.push(`page${i} console: ${m.text()}`); });
  }

  await page1.goto(url, { waitUntil: "domcontentloaded", timeout: 10000 });
  assert.match(await page1.title(), /sockherd/);
  const w1 = await liveWorker(page1, "page 1");
  await page2.goto(url, { waitUntil: "domcontentloaded", timeout: 10000 });
  let w2 = await liveWorker(page2, "page 2");

  // Force the two pages onto different workers: reload page 2 until its WebSocket lands elsewhere.
  // Every other try, one extra connection shifts the round-robin, whatever the number of
  // connections a reload opens.
  let tries = 0;
  while (w2 === w1 && tries < 10) {
    tries += 1;
    if (tries % 2 === 0) await get(state.port, "/healthz").catch(() => {});
    await page2.reload({ waitUntil: "domcontentloaded", timeout: 10000 });
    w2 = await liveWorker(page2, `page 2 after reload ${tries}`);
  }
  assert.notEqual(w2, w1, `both pages stayed on worker ${w1} after ${tries} reloads of page 2`);
  console.log(`page 1 on worker ${w1}, page 2 on worker ${w2} (after ${tries} reload(s))`);

  // Nicknames (kept per context in localStorage).
  for (const [p, n] of [[page1, "alice"], [page2, "bob"]]) {
    await p.fill("#name", n, { timeout: 5000 });
    await p.locator("#name").dispatchEvent("change");
  }

  // page 1 → page 2 (with markup that must be shown as text, never parsed).
  const id = `${process.pid}-${Date.now().toString(36)}`;
  const m1 = `hello from alice ${id} <b>not bold</b> & "quoted"`;
  await send(page1, m1);
  const in2 = await message(page2, m1, "page 2");
  const in1 = await message(page1, m1, "page 1 (its own message)");
  assert.match(await in2.textContent(), /alice/);
  assert.ok(!(await in2.getAttribute("class")).includes("mine"), "page 2 styles alice's message as its own");
  assert.ok((await in1.getAttribute("class")).includes("mine"), "page 1 does not style its own message as its own");
  assert.equal(await page2.locator("#messages b:has-text('not bold')").count(), 0, "message markup was parsed as HTML");
  assert.ok((await in2.locator(".body").textContent()).includes("<b>not bold</b>"));

  // page 2 → page 1.
  const m2 = `hi alice, bob here ${id} ✓`;
  await send(page2, m2);
  const back1 = await message(page1, m2, "page 1");
  await message(page2, m2, "page 2 (its own message)");
  assert.match(await back1.textContent(), /bob/);
  assert.equal(await page1.locator("#messages .msg").count(), 2);
  assert.equal(await page2.locator("#messages .msg").count(), 2);

  // Screenshot of page 2 for people (and CI artifacts).
  const shot = path.join(ARTIFACTS, "sockherd-chat-page2.png");
  fs.rmSync(shot, { force: true });
  await page2.screenshot({ path: shot, timeout: 10000 });
  assert.ok(fs.existsSync(shot) && fs.statSync(shot).size > 0, `screenshot ${shot} missing or empty`);
  console.log(`screenshot: ${shot}`);

  assert.deepEqual(problems, [], "page errors");
  state.pages = [page1, page2];
});

test("after a restart the pages reconnect, resubscribe and chat again", { timeout: 30000 }, async () => {
  assert.ok(state.pages, "the chat test did not get far enough");
  const [page1, page2] = state.pages;
  await stopNode(state.node);
  for (const [i, p] of state.pages.entries()) {
    await p.waitForFunction(() => /reconnecting in \d/.test(document.getElementById("status").textContent),
      null, { timeout: 5000, polling: 50 }).catch((e) => { throw new Error(`page ${i + 1}: ${e.message}`); });
    assert.ok(await p.locator("#send").isDisabled(), `page ${i + 1}: send stays enabled while disconnected`);
  }
  await page1.screenshot({ path: path.join(ARTIFACTS, "sockherd-chat-page1-reconnecting.png"), timeout: 10000 });

  // Same port again: the pages' backoff (0.5 s doubling) brings them back within a few seconds.
  await startNode("sockherd-browser-node-2.log");
  await liveWorker(page1, "page 1 after restart");
  await liveWorker(page2, "page 2 after restart");
  const m3 = `back again ${process.pid}-${Date.now().toString(36)}`;
  await send(page2, m3);
  await message(page1, m3, "page 1 after restart");
  await message(page2, m3, "page 2 after restart (its own message)");
});

test("SIGTERM stops the node with exit code 0", { timeout: 15000 }, async () => {
  await stopNode(state.node);
});
