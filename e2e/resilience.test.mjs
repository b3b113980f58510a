// Connections that break: the server killed and restarted on the same port, and a network that drops every
// connection every few seconds. Each panel's client reconnects, and its offsets stay whole: no gap and no repeat
// within an epoch, and a new epoch only after the client said so (a reset).
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  TECHNIQUES,
  assertConsecutive,
  assertWholeWithinEpochs,
  demoRecord,
  freePort,
  panelLengths,
  launchBrowser,
  openPage,
  sleep,
  startCuttingProxy,
  startDemo,
  waitForPanels,
} from "./harness.mjs";

let browser;
const cleanups = [];

before(async () => {
  browser = await launchBrowser();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

after(async () => {
  await browser?.close();
});

test(
  "after the server is killed and restarted, every panel resumes whole or reports the reset",
  { timeout: 120000 },
  async () => {
    const port = await freePort();
    let server = await startDemo(port);
    cleanups.push(() => server.stop("SIGKILL"));
    const { page, context, errors } = await openPage(browser, `${server.url}/`);
    cleanups.push(() => context.close());
    await waitForPanels(page, 4);

    await server.stop("SIGKILL");
    await sleep(1500);
    server = await startDemo(port);
    await waitForPanels(page, 6, { since: await panelLengths(page), timeoutMs: 60000 });

    const { sequences, resets } = await demoRecord(page);
    for (const technique of TECHNIQUES) {
      // An in-memory server that restarts loses its history: the client must either have resumed without a gap
      // (impossible here, but allowed) or have reported a reset where the new epoch starts.
      if (resets[technique].length === 0) assertConsecutive(sequences[technique], technique);
      else assertWholeWithinEpochs(sequences[technique], resets[technique], technique);
    }
    assert.deepEqual(errors, []);
  },
);

test(
  "when a proxy drops every connection every few seconds, every panel's stream stays whole",
  { timeout: 120000 },
  async () => {
    const server = await startDemo(await freePort());
    cleanups.push(() => server.stop());
    const proxy = await startCuttingProxy(server.port);
    cleanups.push(() => proxy.close());
    const { page, context, errors } = await openPage(browser, `${proxy.url}/`);
    cleanups.push(() => context.close());
    await waitForPanels(page, 2);

    for (let round = 0; round < 5; round++) {
      await sleep(2500);
      proxy.cutAll();
    }
    // Every panel must be back: connected again, and still receiving after the last cut.
    await page.waitForFunction(
      (techniques) => techniques.every((t) => window.heraldDemo.clients[t].state.state === "connected"),
      TECHNIQUES,
      { timeout: 30000, polling: 200 },
    );
    await waitForPanels(page, 4, { since: await panelLengths(page), timeoutMs: 30000 });

    const { sequences, resets, states } = await demoRecord(page);
    assert.ok(proxy.stats().cut >= 5, `the proxy cut only ${proxy.stats().cut} connections`);
    // A stream and a socket are always open, so every cut hits them. (Polls may not even notice: Chromium sends a
    // GET again by itself when a reused keep-alive connection closes before any answer.)
    for (const technique of ["sse", "websocket"]) {
      const reconnects = states[technique].filter((state) => state === "reconnecting").length;
      assert.ok(
        reconnects >= 3,
        `${technique} reconnected ${reconnects} times through 5 cuts: ${states[technique].join(" → ")}`,
      );
    }
    for (const technique of TECHNIQUES) {
      assert.deepEqual(resets[technique], [], `${technique} reported a reset, but the server kept its history`);
      assertConsecutive(sequences[technique], technique);
    }
    assert.deepEqual(errors, []);
  },
);
