// What every browser test needs, written once: a free port, a `herald demo` or `herald serve` server that a test
// can kill and restart, Debian's Chromium driven by playwright-core, a proxy that cuts connections, and the checks
// of an offset sequence. Every wait is bounded.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { REPO } from "./herald-process.mjs";

export { REPO, freePort, request, sleep, startDemo, startServe } from "./herald-process.mjs";
export const OUTPUT = path.join(REPO, "test-output");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

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
