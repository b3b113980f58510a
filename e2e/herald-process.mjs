// Herald as a process for tests written in Node: a free port, `herald demo` or `herald serve` started from the binary
// cargo built, stopped gracefully or killed. Shared by the browser tests (harness.mjs) and the Pusher compatibility
// tests (compat/pusher/), so that a server is started one way only. Every wait is bounded.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
// Where scripts/e2e.sh's `cargo build -p herald` put it: target/, or CARGO_TARGET_DIR (relative to the repository,
// where the script runs cargo) when that is set.
const TARGET_DIR = path.resolve(REPO, process.env.CARGO_TARGET_DIR || "target");
const HERALD_BIN = process.env.HERALD_BIN ?? path.join(TARGET_DIR, "debug", "herald");
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
