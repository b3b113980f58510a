// With transports switched off on the server, a client that prefers WebSocket ends up on the best one left,
// and its stream stays whole across the fallback.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { assertConsecutive, freePort, launchBrowser, openPage, startDemo } from "./harness.mjs";

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** Runs a client preferring all four transports in the page, until it delivered `count` messages. */
async function probe(page, count) {
  await page.evaluate(async () => {
    const { Herald } = await import("/v1/herald.js");
    const herald = new Herald(location.origin, {
      transports: ["websocket", "sse", "long-poll", "poll"],
      reconnectDelay: 300,
    });
    const probe = { states: [], offsets: [], resets: [] };
    window.fallbackProbe = probe;
    herald.on("state", ({ state, transport }) => probe.states.push(`${state}:${transport}`));
    herald.on("reset", ({ channel }) => probe.resets.push(channel));
    herald.subscribe("dashboard", { last: 1 }, (_data, msg) => probe.offsets.push(msg.offset));
  });
  await page.waitForFunction((count) => window.fallbackProbe.offsets.length >= count, count, {
    timeout: 45000,
    polling: 200,
  });
  return page.evaluate(() => structuredClone(window.fallbackProbe));
}

for (const [disabled, transports, expected] of [
  ["WebSocket", "sse,poll", "sse"],
  ["WebSocket and SSE", "poll", "long-poll"],
]) {
  test(
    `with ${disabled} disabled on the server, the client falls back to ${expected} and loses nothing`,
    { timeout: 90000 },
    async () => {
      const server = await startDemo(await freePort(), ["--transports", transports]);
      const { page, context } = await openPage(browser, `${server.url}/`);
      try {
        const result = await probe(page, 8);
        assert.equal(result.states.at(-1), `connected:${expected}`, `states: ${result.states.join(" → ")}`);
        assert.equal(
          result.states.filter((s) => s.startsWith("connected")).length,
          1,
          `states: ${result.states.join(" → ")}`,
        );
        assert.equal(result.states[0], "connecting:websocket");
        assert.deepEqual(result.resets, []);
        assertConsecutive(result.offsets, `${expected} after fallback`);
      } finally {
        await context.close();
        await server.stop();
      }
    },
  );
}
