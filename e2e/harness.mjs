// What every browser test needs, written once: a free port, a `herald demo` or `herald serve` server that a test
// can kill and restart, Debian's Chromium driven by playwright-core, a proxy that cuts connections, and the checks
// of an offset sequence. Every wait is bounded.

import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const OUTPUT = path.join(REPO, "test-output");
// Where scripts/e2e.sh's `cargo build -p herald` put it: target/, or CARGO_TARGET_DIR (relative to the repository,
// where the script runs cargo) when that is set.
const TARGET_DIR = path.resolve(REPO, process.env.CARGO_TARGET_DIR || "target");
const HERALD_BIN = process.env.HERALD_BIN ?? path.join(TARGET_DIR, "debug", "herald");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const READY_LINE = /Herald demo running: open (http:\/\/\S+)/;

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Runs the herald binary with `args`; its output is kept for error messages, and it dies with the test run. */
function spawnHerald(args) {
  // HERALD_BIN is the tests' setting, not the server's: Herald refuses any HERALD_* variable it does not know.
  const { HERALD_BIN: _, ...env } = process.env;
  const child = spawn(HERALD_BIN, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  running.add(child);
  let output = "";
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  child.once("exit", () => running.delete(child));
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  return {
    child,
    exited,
    output: () => output,
    /** Ends the server: `SIGKILL` to lose it mid-stream, `SIGTERM` for a graceful stop. Resolves once it exited. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Starts `herald demo` on 127.0.0.1:`port` and resolves once it printed its address. `extraArgs` go after the
 * defaults (e.g. `["--transports", "sse,poll"]`).
 */
export async function startDemo(port, extraArgs = [], { timeoutMs = 30000 } = {}) {
  const args = ["demo", "--listen", `127.0.0.1:${port}`, "--interval-ms", "500", ...extraArgs];
  const server = spawnHerald(args);
  const { child, exited, output } = server;
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(`herald ${args.join(" ")} did not print its address within ${timeoutMs} ms; output:\n${output()}`),
      );
    }, timeoutMs);
    const onData = () => {
      const match = output().match(READY_LINE);
      if (match) {
        clearTimeout(timer);
        resolve(match[1].replace(/\/+$/, ""));
      }
    };
    child.stdout.on("data", onData);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${HERALD_BIN}: ${error.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      const status = code ?? signal;
      reject(new Error(`herald ${args.join(" ")} exited (${status}) before printing its address:\n${output()}`));
    });
  });
  return { url, port, output, stop: server.stop };
}

/**
 * A GET of `url` that resolves to `{ status, text }`; over HTTPS it trusts `ca` (PEM) and uses a connection of
 * its own, closed after the answer, so that it never counts among the browser's connections for long.
 */
export function request(url, { ca, method = "GET", body } = {}) {
  if (!url.startsWith("https:")) {
    return fetch(url, { method, body, headers: body ? { "Content-Type": "application/json" } : {} }).then(
      async (res) => ({ status: res.status, text: await res.text() }),
    );
  }
  return new Promise((resolve, reject) => {
    const headers = body ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } : {};
    const req = https.request(url, { method, ca, agent: false, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Starts `herald serve` on 127.0.0.1:`port` with `config` (the TOML file's text, without `listen`) and resolves
 * once `/healthz` answers (over HTTPS trusting `ca` when given). `metric(line)` reads one value of `/metrics`, e.g.
 * `herald_refusals_total{reason="invalid_token"}` (0 when absent); `publish(channel, data)` publishes.
 */
export async function startServe(port, config, { timeoutMs = 30000, ca } = {}) {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), "herald-e2e-")), "herald.toml");
  writeFileSync(file, `listen = "127.0.0.1:${port}"\n${config}`);
  const server = spawnHerald(["serve", "--config", file]);
  const url = `${ca ? "https" : "http"}://127.0.0.1:${port}`;
  let exit = null;
  server.exited.then((status) => (exit = status));
  server.child.once("error", (error) => (exit = { error }));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exit) throw new Error(`herald serve exited (${JSON.stringify(exit)}) before answering:\n${server.output()}`);
    const healthy = await request(`${url}/healthz`, { ca }).then(
      (res) => res.status === 200,
      () => false,
    );
    if (healthy) break;
    if (Date.now() > deadline) {
      await server.stop("SIGKILL");
      throw new Error(`herald serve did not answer /healthz within ${timeoutMs} ms; output:\n${server.output()}`);
    }
    await sleep(100);
  }
  return {
    url,
    port,
    output: server.output,
    stop: server.stop,
    async metric(line) {
      const { text } = await request(`${url}/metrics`, { ca });
      const found = text.split("\n").find((l) => l.startsWith(`${line} `));
      return found ? Number(found.slice(line.length + 1)) : 0;
    },
    async publish(channel, data) {
      const body = JSON.stringify({ data });
      const res = await request(`${url}/v1/channels/${channel}/messages`, { ca, method: "POST", body });
      assert.equal(res.status, 201, res.text);
      return JSON.parse(res.text);
    },
  };
}

/**
 * A test CA and a certificate it signs for 127.0.0.1 and localhost, made with Debian's openssl: the files to give
 * Herald (the chain holds the CA too), the CA's PEM for Node, and the CA's public-key hash for Chromium's
 * `--ignore-certificate-errors-spki-list`, which makes the browser trust certificates whose chain holds that key.
 */
export function testCertificates() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "herald-e2e-ca-"));
  const at = (name) => path.join(dir, name);
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Herald e2e CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  openssl("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(at("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "server.pem", "-days", "2", "-extfile", "server.ext");
  const ca = readFileSync(at("ca.pem"), "utf8");
  writeFileSync(at("chain.pem"), readFileSync(at("server.pem"), "utf8") + ca);
  const publicKey = openssl("x509", "-in", "ca.pem", "-pubkey", "-noout");
  const der = execFileSync("openssl", ["pkey", "-pubin", "-outform", "der"], { input: publicKey });
  const spki = execFileSync("openssl", ["dgst", "-sha256", "-binary"], { input: der }).toString("base64");
  return { certFile: at("chain.pem"), keyFile: at("server.key"), ca, spki };
}

export async function launchBrowser(extraArgs = []) {
  // launch() gives every browser a fresh temporary profile (user-data-dir) of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      ...extraArgs,
    ],
    timeout: 60000,
  });
}

/** A page that fails the test on an uncaught error of the page itself. */
export async function openPage(browser, url, { viewport = { width: 1440, height: 1000 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.setDefaultTimeout(30000);
  // A proxy test may cut the very first load; try again a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      await page.goto(url, { waitUntil: "load", timeout: 15000 });
      await page.waitForFunction(() => window.heraldDemo !== undefined, null, { timeout: 15000 });
      break;
    } catch (error) {
      if (attempt >= 4) throw error;
      await sleep(500);
    }
  }
  return { page, context, errors };
}

export const TECHNIQUES = ["poll", "long-poll", "sse", "websocket"];

/** What the demo page recorded: `{ sequences, names, resets, states }` per technique. */
export function demoRecord(page) {
  return page.evaluate(() => {
    const { sequences, names, resets, states } = window.heraldDemo;
    return structuredClone({ sequences, names, resets, states });
  });
}

/** How many messages each panel has delivered so far. */
export async function panelLengths(page) {
  const { sequences } = await demoRecord(page);
  return Object.fromEntries(Object.entries(sequences).map(([technique, offsets]) => [technique, offsets.length]));
}

/** Waits until every panel delivered at least `count` messages (of the channel, beyond `since[technique]`). */
export async function waitForPanels(page, count, { since = {}, timeoutMs = 45000 } = {}) {
  await page.waitForFunction(
    ({ techniques, count, since }) =>
      techniques.every((t) => window.heraldDemo.sequences[t].length >= (since[t] ?? 0) + count),
    { techniques: TECHNIQUES, count, since },
    { timeout: timeoutMs, polling: 200 },
  );
}

/** Fails unless each offset is the previous plus one: no gap, no repeat. */
export function assertConsecutive(offsets, label) {
  for (let i = 1; i < offsets.length; i++) {
    if (offsets[i] !== offsets[i - 1] + 1) {
      const around = offsets.slice(Math.max(0, i - 4), i + 4).join(", ");
      assert.fail(
        `${label}: offset ${offsets[i]} follows ${offsets[i - 1]} at index ${i} (… ${around} …); sequence: ${offsets.join(",")}`,
      );
    }
  }
}

/** Splits a sequence where the client reported resets (new epochs), and checks each part is consecutive. */
export function assertWholeWithinEpochs(offsets, resets, label) {
  const cuts = [...new Set(resets)].sort((a, b) => a - b);
  let start = 0;
  for (const [i, cut] of [...cuts, offsets.length].entries()) {
    assertConsecutive(offsets.slice(start, cut), `${label}, epoch ${i + 1}`);
    start = cut;
  }
}

/** A TCP proxy to `target` that can drop every connection it carries, as a flaky network does. */
export async function startCuttingProxy(targetPort) {
  const sockets = new Set();
  let accepted = 0;
  let cut = 0;
  const server = net.createServer((client) => {
    accepted++;
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ]) {
      sockets.add(a);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  const port = await new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server.address().port));
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ accepted, cut }),
    /** Drops every connection open right now. */
    cutAll() {
      for (const socket of sockets) {
        socket.destroy();
        cut++;
      }
    },
    close() {
      this.cutAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

export function outputPath(name) {
  mkdirSync(OUTPUT, { recursive: true });
  return path.join(OUTPUT, name);
}
