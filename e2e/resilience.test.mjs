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

test("after the server is killed and restarted, every panel resumes whole or reports the reset", { timeout: 120000 }, async () => {
  const port = await freePort();
  let server = await startDemo(port);
  cleanups.push(() => server.stop("SIGKILL"));
  const { page, context, errors } = await openPage(browser, `${server.url}/`);
  cleanups.push(() => context.close());
  await waitForPanels(page, 4);

  await server.stop("SIGKILL");
  await sleep(1500);
  server = await startDemo(port);
  const before = (await demoRecord(page)).sequences;
  const lengths = Object.fromEntries(TECHNIQUES.map((t) => [t, before[t].length]));
  await waitForPanels(page, 6, { since: lengths, timeoutMs: 60000 });

  const { sequences, resets } = await demoRecord(page);
  for (const technique of TECHNIQUES) {
    // An in-memory server that restarts loses its history: the client must either have resumed without a gap
    // (impossible here, but allowed) or have reported a reset where the new epoch starts.
    if (resets[technique].length === 0) assertConsecutive(sequences[technique], technique);
    else assertWholeWithinEpochs(sequences[technique], resets[technique], technique);
  }
  assert.deepEqual(errors, []);
});

test("when a proxy drops every connection every few seconds, every panel's stream stays whole", { timeout: 120000 }, async () => {
  const server = await startDemo(await freePort());
  cleanups.push(() => server.stop());
  const proxy = await startCuttingProxy(server.port);
  cleanups.push(() => proxy.close());
  const { page, context, errors } = await openPage(browser, `${proxy.url}/`);
  cleanups.push(() => context.close());
  await waitForPanels(page, 2);

  const lengths = Object.fromEntries(
    Object.entries((await demoRecord(page)).sequences).map(([t, offsets]) => [t, offsets.length]),
  );
  for (let round = 0; round < 5; round++) {
    await sleep(2500);
    proxy.cutAll();
  }
  await waitForPanels(page, 10, { since: lengths, timeoutMs: 45000 });

  const { sequences, resets } = await demoRecord(page);
  assert.ok(proxy.stats().cut >= 5, `the proxy cut only ${proxy.stats().cut} connections`);
  for (const technique of TECHNIQUES) {
    assert.deepEqual(resets[technique], [], `${technique} reported a reset, but the server kept its history`);
    assertConsecutive(sequences[technique], technique);
  }
  assert.deepEqual(errors, []);
});
