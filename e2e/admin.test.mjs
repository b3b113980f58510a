// The admin page in a real browser, against a real `herald serve` with an admin key: with the key the page shows
// this node's numbers and they move while the test publishes and subscribes; without it (or with a wrong one) the
// page shows nothing and the API answers 401.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { freePort, launchBrowser, outputPath, startServe } from "./harness.mjs";

const ADMIN_KEY = "e2e-admin-key-0123456789";
const CONFIG = `
admin_keys = ["${ADMIN_KEY}"]

[namespaces.orders]
history_size = 10
`;

let browser;
let server;
const cleanups = [];

before(async () => {
  server = await startServe(await freePort(), CONFIG);
  browser = await launchBrowser();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function adminPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1100 } });
  cleanups.push(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.setDefaultTimeout(20000);
  await page.goto(`${server.url}/admin`, { waitUntil: "load" });
  return { page, errors };
}

async function publish(channel, n) {
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${server.url}/v1/channels/${channel}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ data: { i } }),
    });
    assert.equal(res.status, 201, await res.text());
  }
}

const text = (page, id) => page.locator(`[data-testid=${id}]`).textContent();

test("with the admin key the page shows live numbers that move while messages flow", { timeout: 90000 }, async () => {
  const { page, errors } = await adminPage();
  await page.locator("[data-testid=key]").fill(ADMIN_KEY);
  await page.locator("[data-testid=open]").click();
  await page.locator("[data-testid=state][data-state=live]").waitFor();
  await page.locator("[data-testid=dashboard]").waitFor({ state: "visible" });
  const before = Number(await text(page, "published"));

  // A subscriber the page must count, and messages whose rate it must show.
  const subscriber = new AbortController();
  cleanups.push(() => subscriber.abort());
  const stream = await fetch(`${server.url}/v1/sse?channel=orders:42`, { signal: subscriber.signal });
  assert.equal(stream.status, 200);
  await publish("orders:42", 20);
  await page.waitForFunction(
    (before) => Number(document.querySelector("[data-testid=published]").textContent) >= before + 20,
    before,
    { timeout: 20000, polling: 200 },
  );
  const connections = page.locator("[data-testid=connections] tbody tr").first();
  await page.waitForFunction(
    () => document.querySelector("[data-testid=connections] tbody tr td:nth-child(3)")?.textContent === "1",
    null,
    { timeout: 20000, polling: 200 },
  );
  assert.match(await connections.locator("td").first().textContent(), /:\d+$/, "the node's name and port");
  assert.equal((await text(page, "engine")).trim(), "memory healthy");
  const busiest = page.locator("[data-testid=busiest] tbody tr").first();
  assert.equal(await busiest.locator("td").first().textContent(), "orders:42");
  assert.ok(Number(await busiest.locator("td").nth(1).textContent()) > 0);
  const orders = page.locator("[data-testid=namespaces] tbody tr", { hasText: "orders" });
  assert.equal(await orders.locator("td").nth(1).textContent(), "1", "one subscription in orders");
  assert.match(await text(page, "history"), /messages in \d+ channels?$/);

  // The numbers keep moving: more messages, a later snapshot.
  const updated = await text(page, "updated");
  await publish("orders:42", 5);
  await page.waitForFunction(
    (before) => Number(document.querySelector("[data-testid=published]").textContent) >= before + 25,
    before,
    { timeout: 20000, polling: 200 },
  );
  await page.waitForFunction((was) => document.querySelector("[data-testid=updated]").textContent !== was, updated);
  await page.screenshot({ path: outputPath("admin.png"), fullPage: true });
  assert.deepEqual(errors, []);
});

test("without the key the page shows nothing and the API answers 401", { timeout: 60000 }, async () => {
  const refusedBefore = await server.metric('herald_refusals_total{reason="invalid_admin_key"}');
  const { page, errors } = await adminPage();
  assert.equal(await page.locator("[data-testid=dashboard]").isVisible(), false);
  assert.equal(await page.locator("[data-testid=state]").getAttribute("data-state"), "locked");
  assert.equal(await page.locator("[data-testid=connections] tbody tr").count(), 0, "no data in the page");

  // A wrong key is refused by the server, and the page says so and stays locked.
  await page.locator("[data-testid=key]").fill("not-the-admin-key-000");
  await page.locator("[data-testid=open]").click();
  await page.locator("[data-testid=error]").waitFor({ state: "visible" });
  assert.match(await text(page, "error"), /not valid/);
  assert.equal(await page.locator("[data-testid=dashboard]").isVisible(), false);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused key is not kept");

  // The API itself, as the page (or anyone) reaches it without a key.
  const answers = await page.evaluate(async () => {
    const snapshot = await fetch("/admin/api/snapshot");
    const events = await fetch("/admin/api/events");
    return [snapshot.status, (await snapshot.json()).error.code, events.status];
  });
  assert.deepEqual(answers, [401, "admin_key_required", 401]);
  assert.ok((await server.metric('herald_refusals_total{reason="invalid_admin_key"}')) >= refusedBefore + 3);
  assert.deepEqual(errors, []);
});

test("the key stays in the tab: a reload keeps the page open, another tab asks again", { timeout: 60000 }, async () => {
  const { page } = await adminPage();
  await page.locator("[data-testid=key]").fill(ADMIN_KEY);
  await page.locator("[data-testid=open]").click();
  await page.locator("[data-testid=state][data-state=live]").waitFor();
  await page.reload({ waitUntil: "load" });
  await page.locator("[data-testid=state][data-state=live]").waitFor();
  const other = await page.context().newPage();
  await other.goto(`${server.url}/admin`, { waitUntil: "load" });
  assert.equal(await other.locator("[data-testid=state]").getAttribute("data-state"), "locked");
  await page.locator("[data-testid=forget]").click();
  assert.equal(await page.locator("[data-testid=state]").getAttribute("data-state"), "locked");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
});
