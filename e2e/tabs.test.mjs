// Many tabs, no proxy: Chromium over HTTPS (Herald's own TLS, the test CA trusted by its public key). Ten tabs of
// a page with an SSE stream each all receive every message over HTTP/2; over HTTP/1.1 they do too when herald.js
// shares one connection among them; without sharing the seventh stalls (a browser opens at most six HTTP/1.1
// connections per host), which shows the test can fail. Closing the tab that runs the shared connection loses
// nothing and repeats nothing in the others.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { assertConsecutive, freePort, launchBrowser, sleep, startServe, testCertificates } from "./harness.mjs";

const TABS = 10;
const CHANNEL = "tabs";
let certificates;
let browser;
let servers = [];

before(async () => {
  certificates = testCertificates();
  browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${certificates.spki}`]);
});

after(async () => {
  await browser?.close();
  for (const server of servers) await server.stop();
});

async function startHttps({ http2 }) {
  const config = [
    `tls_cert_file = "${certificates.certFile}"`,
    `tls_key_file = "${certificates.keyFile}"`,
    `http2 = ${http2}`,
    "sse_heartbeat_secs = 2",
  ].join("\n");
  const server = await startServe(await freePort(), config, { ca: certificates.ca });
  servers.push(server);
  return server;
}

/** Opens `count` tabs of one browser profile (so they share its connections), each with herald.js loaded. */
async function openTabs(context, url, count) {
  const pages = [];
  for (let i = 0; i < count; i++) {
    const page = await context.newPage();
    page.setDefaultTimeout(30000);
    const errors = [];
    page.on("pageerror", (error) => errors.push(error.message));
    page.errors = errors;
    await page.goto(`${url}/healthz`);
    await page.evaluate(async () => {
      window.heraldModule = await import("/v1/herald.js");
    });
    pages.push(page);
  }
  return pages;
}

/** Subscribes the tab to CHANNEL over SSE; it records the offsets it is handed and its states. */
function subscribe(page, share) {
  return page.evaluate(
    ({ share, channel }) => {
      const { Herald } = window.heraldModule;
      window.seen = [];
      window.states = [];
      window.herald = new Herald(location.origin, { transports: ["sse"], share });
      window.herald.on("state", ({ state }) => window.states.push(state));
      window.herald.subscribe(channel, (_data, msg) => window.seen.push(msg.offset));
    },
    { share, channel: CHANNEL },
  );
}

const connected = (page) => page.waitForFunction(() => window.herald.state.state === "connected", null, { timeout: 30000 });
const seen = (page) => page.evaluate(() => window.seen);
const until = (page, count) => page.waitForFunction((n) => window.seen.length >= n, count, { timeout: 30000 });

async function publish(server, n) {
  for (let i = 0; i < n; i++) await server.publish(CHANNEL, { i });
}

test("over HTTP/2, ten tabs with a stream each all receive every message, on one connection", async () => {
  const server = await startHttps({ http2: true });
  const context = await browser.newContext();
  const pages = await openTabs(context, server.url, TABS);
  const protocol = await pages[0].evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  assert.equal(protocol, "h2");
  for (const page of pages) await subscribe(page, false);
  for (const page of pages) await connected(page);
  assert.equal(await server.metric('herald_connections{transport="sse"}'), TABS, "a stream per tab");
  // The browser's one connection; the metric request itself is the only HTTP/1.1 one.
  assert.equal(await server.metric('herald_http_connections{protocol="h2",tls="true"}'), 1);
  assert.equal(await server.metric('herald_http_connections{protocol="http/1.1",tls="true"}'), 1);
  await publish(server, 5);
  for (const page of pages) {
    await until(page, 5);
    assert.deepEqual(await seen(page), [1, 2, 3, 4, 5]);
    assert.deepEqual(page.errors, []);
  }
  await context.close();
});

test("over HTTP/1.1, ten tabs sharing one connection all receive every message", async () => {
  const server = await startHttps({ http2: false });
  const context = await browser.newContext();
  const pages = await openTabs(context, server.url, TABS);
  for (const page of pages) await subscribe(page, "auto");
  for (const page of pages) await connected(page);
  assert.deepEqual(await pages[0].evaluate(() => window.herald.sharing), { mode: "worker", leader: false });
  assert.equal(await server.metric('herald_connections{transport="sse"}'), 1, "one stream for all the tabs");
  await publish(server, 5);
  for (const page of pages) {
    await until(page, 5);
    assert.deepEqual(await seen(page), [1, 2, 3, 4, 5]);
    assert.deepEqual(page.errors, []);
  }
  await context.close();
});

test("over HTTP/1.1 without sharing, the seventh tab stalls behind the six streams", async () => {
  const server = await startHttps({ http2: false });
  const context = await browser.newContext();
  const pages = await openTabs(context, server.url, TABS);
  for (const page of pages) await subscribe(page, false);
  for (const page of pages.slice(0, 6)) await connected(page);
  await publish(server, 3);
  for (const page of pages.slice(0, 6)) await until(page, 3);
  assert.equal(await server.metric('herald_connections{transport="sse"}'), 6, "six streams, no more");
  for (const page of pages.slice(6)) {
    assert.deepEqual(await seen(page), [], "a tab beyond the sixth receives nothing");
    assert.notEqual(await page.evaluate(() => window.herald.state.state), "connected");
  }
  await context.close();
});

for (const share of ["tab", "worker"]) {
  const closed = share === "tab" ? "the leading tab" : "the first tab";
  test(`closing ${closed} mid-stream (share: ${share}): the others go on with no gap and no repeat`, async () => {
    const server = await startHttps({ http2: false });
    const context = await browser.newContext();
    const opened = await openTabs(context, server.url, 4);
    for (const page of opened) await subscribe(page, share);
    for (const page of opened) await connected(page);
    let first = 0;
    if (share === "tab") {
      // The tab that asked for the lock first usually wins it, but the browser does not promise that order across
      // tabs: the test closes whichever tab leads.
      const sharing = await Promise.all(opened.map((page) => page.evaluate(() => window.herald.sharing)));
      assert.deepEqual(sharing.map((s) => s.mode), ["tab", "tab", "tab", "tab"]);
      assert.equal(sharing.filter((s) => s.leader).length, 1, "one tab leads");
      first = sharing.findIndex((s) => s.leader);
    }
    const pages = [opened[first], ...opened.filter((_, i) => i !== first)];
    let publishing = true;
    let published = 0;
    const publisher = (async () => {
      while (publishing) {
        await server.publish(CHANNEL, { n: ++published });
        await sleep(50);
      }
    })();
    const rest = pages.slice(1);
    for (const page of rest) await until(page, 10);
    await pages[0].close();
    const atClose = Math.max(...(await Promise.all(rest.map(async (page) => (await seen(page)).length))));
    for (const page of rest) await until(page, atClose + 20);
    publishing = false;
    await publisher;
    for (const page of rest) {
      await page.waitForFunction((last) => window.seen.at(-1) === last, published, { timeout: 30000 });
      const offsets = await seen(page);
      assertConsecutive(offsets, `a tab after the first closed (${share})`);
      assert.equal(offsets[0], 1, "from the first message");
      assert.deepEqual(page.errors, []);
    }
    if (share === "tab") {
      const leaders = await Promise.all(rest.map((page) => page.evaluate(() => window.herald.sharing.leader)));
      assert.equal(leaders.filter(Boolean).length, 1, "another tab took over");
    }
    await context.close();
  });
}
