// What the browser tests share: bounded waits, free ports, plain HTTP GETs, child processes in
// their own process group (output kept and teed to an artifact log), a sockherd node from a
// config, and headless Chromium (the system's /usr/bin/chromium) driven over CDP on loopback.
//
// Env: SOCKHERD_BINARY (required), SOCKHERD_ARTIFACTS_DIR (screenshots + logs; default
//      os.tmpdir()), CHROMIUM (default /usr/bin/chromium).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ARTIFACTS = process.env.SOCKHERD_ARTIFACTS_DIR || os.tmpdir();
export const HOST = "127.0.0.1";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the result of `promise`, or rejects after `ms` with `what` in the message. */
export function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** GET http://127.0.0.1:port/path on a fresh connection; resolves { status, body }. */
export function get(port, urlPath, timeoutMs = 1000, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: HOST, port, path: urlPath, agent: false, timeout: timeoutMs, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error("request timed out")));
    req.on("error", reject);
  });
}

/** A child process in its own process group, with its output kept (and teed to a log file). */
export function start(cmd, args, logName) {
  const logPath = path.join(ARTIFACTS, logName);
  const log = fs.createWriteStream(logPath);
  const child = spawn(cmd, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const proc = { child, logPath, output: "", exited: null };
  const keep = (chunk) => {
    proc.output = (proc.output + chunk.toString()).slice(-64 * 1024);
    log.write(chunk);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  proc.exit = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      proc.exited = { code, signal };
      resolve(proc.exited);
    });
    child.on("error", (err) => {
      keep(`spawn failed: ${err.message}\n`);
      proc.exited = { code: null, signal: null, error: err };
      resolve(proc.exited);
    });
  });
  child.on("close", () => log.end());
  return proc;
}

/** SIGKILL a process group we started, if it may still be there. Only ever our own children. */
export function killGroup(proc) {
  if (!proc || !proc.child.pid) return;
  try { process.kill(-proc.child.pid, "SIGKILL"); } catch { /* already gone */ }
}

/** Checks SOCKHERD_BINARY and Chromium, creates the artifacts dir; returns the binary's path. */
export function checkEnvironment() {
  const binary = process.env.SOCKHERD_BINARY;
  if (!binary) throw new Error("SOCKHERD_BINARY is not set: point it at the sockherd binary to test (e.g. build/sockherd)");
  if (!fs.existsSync(binary)) throw new Error(`SOCKHERD_BINARY=${binary}: no such file`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium package (run.sh does)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.resolve(binary);
}

/**
 * The TOML every browser-test node shares: its own control socket in `dir` and its admin listener
 * on `adminPort` (never the defaults, 127.0.0.1:9090 and /run/sockherd/control.sock), `workers`
 * workers, one listener on `port`, then `extra` lines.
 */
export function nodeConfig({ dir, port, adminPort, workers, extra = [] }) {
  return [
    "[server]", `workers = ${workers}`, `control_socket = "${path.join(dir, "control.sock")}"`, "",
    "[[listener]]", `address = "${HOST}:${port}"`, "",
    "[admin]", `address = "${HOST}:${adminPort}"`, "",
    ...extra, "",
  ].join("\n");
}

/** Writes `config` to dir/sockherd.toml and starts `sockherd run` on it. */
export function startNode(dir, config, logName) {
  const file = path.join(dir, "sockherd.toml");
  fs.writeFileSync(file, config);
  const node = start(checkEnvironment(), ["run", "--config", file], logName);
  node.configPath = file;
  return node;
}

/** SIGTERM to the supervisor only (it stops its workers); asserts exit code 0 within 10 s. */
export async function stopNode(node) {
  assert.ok(node && !node.exited, "sockherd is not running");
  process.kill(node.child.pid, "SIGTERM");
  const exited = await within(10000, "sockherd to exit after SIGTERM", node.exit);
  assert.deepEqual(exited, { code: 0, signal: null }, `sockherd exit after SIGTERM; log:\n${node.output}`);
  // Its workers are gone too (they are in the supervisor's process group).
  assert.throws(() => process.kill(-node.child.pid, 0), { code: "ESRCH" }, "sockherd workers outlived the supervisor");
}

/** Our own Chromium with a fresh profile in `profileDir`, driven over CDP; resolves { proc, browser }. */
export async function launchChromium(profileDir, logName) {
  const proc = start(CHROMIUM, [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--password-store=basic",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--disable-dev-shm-usage", `--user-data-dir=${profileDir}`,
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
  ], logName);
  try {
    const endpoint = await within(20000, "Chromium to print its DevTools endpoint", (async () => {
      for (;;) {
        const m = /DevTools listening on (ws:\/\/127\.0\.0\.1:\d+\/\S+)/.exec(proc.output);
        if (m) return m[1];
        if (proc.exited) throw new Error(`Chromium exited: ${JSON.stringify(proc.exited)}\n${proc.output}`);
        await sleep(50);
      }
    })());
    const browser = await chromium.connectOverCDP(endpoint, { timeout: 15000 });
    return { proc, browser };
  } catch (err) {
    killGroup(proc);
    throw err;
  }
}

/** Disconnects, then stops Chromium (SIGTERM, then SIGKILL after 5 s). */
export async function closeChromium(browser, proc) {
  try { await within(5000, "browser disconnect", browser?.close() ?? Promise.resolve()); } catch { /* killed below */ }
  if (proc && !proc.exited) {
    try { process.kill(-proc.child.pid, "SIGTERM"); } catch { /* gone */ }
    try { await within(5000, "Chromium exit", proc.exit); } catch { killGroup(proc); }
  }
}

/**
 * A test file's browser: Chromium with a fresh profile in state.profile, state.browser and
 * state.browserProc set. Pairs with cleanUp(state).
 */
export async function openBrowser(state, logName) {
  state.profile = fs.mkdtempSync(path.join(os.tmpdir(), "sockherd-chromium-"));
  const { proc, browser } = await launchChromium(state.profile, logName);
  state.browserProc = proc;
  state.browser = browser;
}

/** After a test file: Chromium closed, a node a failed test left running killed, temp dirs removed. */
export async function cleanUp(state) {
  await closeChromium(state.browser, state.browserProc);
  if (state.node && !state.node.exited) killGroup(state.node); // a failed test: no stray node
  for (const d of [state.profile, state.dir]) {
    if (d) try { fs.rmSync(d, { recursive: true, force: true, maxRetries: 3 }); } catch { /* best effort */ }
  }
}
