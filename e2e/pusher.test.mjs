// pusher-js 8.6.0 in Chromium, from the npm package (served by this test, never fetched), against Herald: over
// WebSocket, and over each of the HTTP fallbacks no other self-hosted Pusher server serves (`xhr_streaming` and
// `xhr_polling`, with `enabledTransports` limited to it). The page subscribes to a public and a private channel
// (authorized by the test's backend), receives what the backend triggers with the `pusher` Node SDK, and sends a
// client event that a second page receives.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import PusherServer from "pusher";
import { freePort, launchBrowser, REPO, startServe } from "./harness.mjs";

const APP = { id: "1", key: "app-key", secret: "app-secret-0123456789" };
const PUSHER_JS = readFileSync(path.join(REPO, "e2e/node_modules/pusher-js/dist/web/pusher.min.js"));

let browser;
let herald;
let backend;
let site;

/** The page: pusher-js from the npm package, connected with the transports of `?transports=`. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<script src="/pusher.min.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  const probe = { states: [], events: [], whispers: [], errors: [], transport: null };
  window.probe = probe;
  const pusher = new Pusher(params.get("key"), {
    cluster: "",
    wsHost: "127.0.0.1",
    wsPort: Number(params.get("port")),
    httpHost: "127.0.0.1",
    httpPort: Number(params.get("port")),
    forceTLS: false,
    enabledTransports: params.get("transports").split(","),
    channelAuthorization: { endpoint: "/broadcasting/auth", transport: "ajax" },
  });
  window.pusher = pusher;
  pusher.connection.bind("state_change", ({ current }) => {
    probe.states.push(current);
    if (current === "connected") probe.transport = pusher.connection.connection.transport.name;
  });
  pusher.connection.bind("error", (error) => probe.errors.push(JSON.stringify(error)));
  const record = (channel) => (name) => (data) => probe.events.push({ channel, name, data });
  const orders = pusher.subscribe("orders");
  orders.bind("shipped", record("orders")("shipped"));
  const room = pusher.subscribe("private-room");
  room.bind("pusher:subscription_succeeded", () => (probe.roomReady = true));
  room.bind("paid", record("private-room")("paid"));
  room.bind("client-wave", (data) => probe.whispers.push(data));
</script>`;

/** The test's site: the page, pusher-js, and the backend's authorization endpoint. */
function serveSite(port) {
  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://site");
    if (url.pathname === "/") {
      response.writeHead(200, { "content-type": "text/html" }).end(PAGE);
    } else if (url.pathname === "/pusher.min.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(PUSHER_JS);
    } else if (url.pathname === "/broadcasting/auth" && request.method === "POST") {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        const form = new URLSearchParams(body);
        const auth = backend.authorizeChannel(form.get("socket_id"), form.get("channel_name"));
        response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(auth));
      });
    } else {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

before(async () => {
  const config = `[[pusher.apps]]\nid = "${APP.id}"\nkey = "${APP.key}"\nsecret = "${APP.secret}"\n`;
  herald = await startServe(await freePort(), config);
  backend = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: "127.0.0.1", port: String(herald.port), useTLS: false });
  const sitePort = await freePort();
  site = { server: await serveSite(sitePort), url: `http://127.0.0.1:${sitePort}` };
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.server.close();
  await herald?.stop();
});

/** A page of the site connected with `transports`, once it is subscribed to both channels. */
async function open(transports) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${site.url}/?key=${APP.key}&port=${herald.port}&transports=${transports}`);
  await page.waitForFunction(() => window.probe.transport && window.probe.roomReady, null, { timeout: 30000 });
  return { page, context, errors };
}

for (const transport of ["ws", "xhr_streaming", "xhr_polling"]) {
  test(`pusher-js over ${transport} receives what the backend triggers and relays client events`, { timeout: 90000 }, async () => {
    const first = await open(transport);
    const second = await open(transport);
    try {
      assert.equal(await first.page.evaluate(() => window.probe.transport), transport);
      await backend.trigger("orders", "shipped", { id: 7 });
      await backend.trigger("private-room", "paid", { total: 12 });
      await first.page.waitForFunction(() => window.probe.events.length >= 2, null, { timeout: 30000 });
      assert.deepEqual(await first.page.evaluate(() => window.probe.events), [
        { channel: "orders", name: "shipped", data: { id: 7 } },
        { channel: "private-room", name: "paid", data: { total: 12 } },
      ]);
      await first.page.evaluate(() => window.pusher.channel("private-room").trigger("client-wave", { from: "first" }));
      await second.page.waitForFunction(() => window.probe.whispers.length >= 1, null, { timeout: 30000 });
      assert.deepEqual(await second.page.evaluate(() => window.probe.whispers), [{ from: "first" }]);
      assert.deepEqual(await first.page.evaluate(() => window.probe.whispers), [], "not echoed to the sender");
      assert.deepEqual([...first.errors, ...second.errors], []);
      const states = await first.page.evaluate(() => window.probe.states);
      assert.deepEqual(states, ["connecting", "connected"], "connected once, no fallback needed");
    } finally {
      await first.context.close();
      await second.context.close();
    }
  });
}
