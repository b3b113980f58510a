// The demo page as a newcomer sees it: four panels moving together, and a chat between two browsers.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  TECHNIQUES,
  assertConsecutive,
  demoRecord,
  freePort,
  launchBrowser,
  openPage,
  outputPath,
  startDemo,
  waitForPanels,
} from "./harness.mjs";

let server;
let browser;

before(async () => {
  server = await startDemo(await freePort());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test(
  "every panel updates, and the four techniques show the same top sellers in the same order",
  { timeout: 90000 },
  async () => {
    const { page, errors } = await openPage(browser, `${server.url}/`);
    await waitForPanels(page, 8);
    for (const technique of TECHNIQUES) {
      const panel = page.locator(`[data-testid=panel-${technique}]`);
      assert.notEqual((await panel.locator("[data-testid=top-seller]").textContent()).trim(), "—", technique);
      assert.ok(Number(await panel.locator("[data-testid=count]").textContent()) >= 8, technique);
      assert.match(await panel.locator("[data-testid=delay]").textContent(), /^\d+(\.\d)? (ms|s)$/, technique);
      assert.equal(await panel.locator("[data-testid=state]").getAttribute("data-state"), "connected", technique);
      assert.notEqual(await panel.locator("svg .line").getAttribute("points"), "", technique);
    }

    const { sequences, names, resets } = await demoRecord(page);
    const start = Math.max(...TECHNIQUES.map((t) => sequences[t][0]));
    const end = Math.min(...TECHNIQUES.map((t) => sequences[t].at(-1)));
    assert.ok(end - start >= 4, `the panels share too short a range: ${start}..${end}`);
    const slice = (t) => {
      const from = sequences[t].indexOf(start);
      const to = sequences[t].indexOf(end);
      return { offsets: sequences[t].slice(from, to + 1), names: names[t].slice(from, to + 1) };
    };
    const reference = slice("websocket");
    for (const technique of TECHNIQUES) {
      assert.deepEqual(resets[technique], [], `${technique} reported a reset on a server that never lost history`);
      assertConsecutive(sequences[technique], technique);
      const mine = slice(technique);
      assert.deepEqual(mine.offsets, reference.offsets, technique);
      assert.deepEqual(mine.names, reference.names, `${technique} shows other top sellers than websocket`);
      assert.ok(
        mine.names.every((name) => ["Ahmed", "Yasser", "Ibrahim", "Hussain", "Hassan"].includes(name)),
        technique,
      );
    }

    await page.waitForFunction(() => document.querySelector("[data-testid=order]").dataset.status !== undefined, null, {
      timeout: 15000,
    });
    await page.screenshot({ path: outputPath("demo.png"), fullPage: true });
    assert.deepEqual(errors, []);
  },
);

test("a chat message typed in one browser context appears in another", { timeout: 60000 }, async () => {
  const alice = await openPage(browser, `${server.url}/`);
  const bob = await openPage(browser, `${server.url}/`);
  for (const { page } of [alice, bob]) {
    await page.locator("[data-testid=chat] [data-testid=state][data-state=connected]").waitFor({ timeout: 20000 });
  }
  const text = `hello from alice ${Date.now()}`;
  await alice.page.locator("[data-testid=chat-name]").fill("Alice");
  await alice.page.locator("[data-testid=chat-input]").fill(text);
  await alice.page.locator("[data-testid=chat-send]").click();

  const received = bob.page.locator("[data-testid=chat-message]", { hasText: text });
  await received.waitFor({ timeout: 10000 });
  assert.equal(await received.locator("strong").textContent(), "Alice");
  assert.equal(await alice.page.locator("[data-testid=chat-input]").inputValue(), "");
  assert.equal(await alice.page.locator("[data-testid=chat-error]").isHidden(), true);
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context.close();
  await bob.context.close();
});

test("the chat shows who is in the room, live, across two browser windows", { timeout: 90000 }, async () => {
  // Other tests' pages may be in the room too: each check is about the names this test controls.
  const until = (page, present, absent = []) =>
    page.waitForFunction(
      ({ present, absent }) => {
        const names = [...document.querySelectorAll("[data-testid=chat-members] [data-testid=chat-member]")].map(
          (item) => item.textContent,
        );
        const count = Number(document.querySelector("[data-testid=chat-member-count]").textContent);
        return (
          count === names.length && present.every((n) => names.includes(n)) && absent.every((n) => !names.includes(n))
        );
      },
      { present, absent },
      { timeout: 20000, polling: 100 },
    );
  const alice = await openPage(browser, `${server.url}/`);
  const aliceName = await alice.page.locator("[data-testid=chat-name]").inputValue();
  await until(alice.page, ["Chef Bot", aliceName]);
  const bob = await openPage(browser, `${server.url}/`);
  const bobName = await bob.page.locator("[data-testid=chat-name]").inputValue();
  await until(alice.page, ["Chef Bot", aliceName, bobName]);
  await until(bob.page, ["Chef Bot", aliceName, bobName]);
  assert.equal(await bob.page.locator("[data-testid=chat-member].me").textContent(), bobName);

  // A new name is a new member: the old one leaves (after the grace), the new one joins.
  await bob.page.locator("[data-testid=chat-name]").fill("Bob the Tester");
  await bob.page.locator("[data-testid=chat-name]").press("Tab");
  await until(alice.page, ["Bob the Tester"], [bobName]);

  // A closed window leaves the room.
  await bob.context.close();
  await until(alice.page, ["Chef Bot", aliceName], ["Bob the Tester"]);
  await alice.page.screenshot({ path: outputPath("demo-presence.png"), fullPage: true });
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context.close();
});
