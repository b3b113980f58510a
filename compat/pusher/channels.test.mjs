// pusher-js 8.6.0 and the `pusher` Node SDK 5.3.4, unmodified, against one Herald: public, private, encrypted and
// cache channels, client events, socket_id exclusion, sign-in with server-to-user events and terminated
// connections, and the Python SDK (pip `pusher`) for the HTTP API, its signing failures included.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  APP,
  client,
  collect,
  connected,
  next,
  python,
  sdk,
  startHerald,
  subscribed,
  until,
  within,
} from "./harness.mjs";

let server;
const clients = [];

/** A connected pusher-js client, disconnected after the file. */
async function connect(options) {
  const pusher = client(server, options);
  clients.push(pusher);
  await connected(pusher);
  return pusher;
}

before(async () => {
  server = await startHerald({ limits: "client_events_per_second = 1000" });
});

after(async () => {
  for (const pusher of clients) pusher.disconnect();
  await server?.stop();
});

test("an event triggered by the Node SDK reaches pusher-js with its data, and Herald's SSE reads it", async () => {
  const pusher = await connect();
  const orders = await subscribed(pusher, "orders");
  const sse = await fetch(`${server.url}/v1/sse?channel=1:orders`);
  const reader = sse.body.getReader();
  const arriving = next(orders, "order-shipped");
  await sdk(server).trigger("orders", "order-shipped", { id: 7, items: ["a", "b"] });
  assert.deepEqual((await arriving).data, { id: 7, items: ["a", "b"] });
  let text = "";
  await within(
    (async () => {
      while (!text.includes("event: order-shipped")) text += new TextDecoder().decode((await reader.read()).value);
    })(),
    "the SSE event",
  );
  assert.match(text, /event: order-shipped\ndata: \{"id":7,"items":\["a","b"\]\}\n/);
  await reader.cancel();
});

test("a private channel subscribes with the backend's authorization and gets what is triggered", async () => {
  const pusher = await connect();
  const channel = await subscribed(pusher, "private-invoices");
  const arriving = next(channel, "paid");
  await sdk(server).trigger("private-invoices", "paid", "plain text");
  assert.equal((await arriving).data, "plain text");
});

test("a private channel with a forged authorization is refused with an AuthError", async () => {
  const pusher = await connect({
    options: {
      channelAuthorization: { customHandler: (_, callback) => callback(null, { auth: `${APP.key}:${"0".repeat(64)}` }) },
    },
  });
  const refused = next(pusher.subscribe("private-secrets"), "pusher:subscription_error");
  const { data } = await refused;
  assert.equal(data.type, "AuthError");
  assert.equal(data.status, 401);
});

test("an encrypted channel's payload stays encrypted on the way and is decrypted by pusher-js", async () => {
  const pusher = await connect();
  const channel = await subscribed(pusher, "private-encrypted-payroll");
  const herald = await fetch(`${server.url}/v1/channels/1:private-encrypted-payroll/messages?token=x`);
  assert.equal(herald.status, 401, "Herald's own transports need a token for it");
  const arriving = next(channel, "salary");
  await sdk(server).trigger("private-encrypted-payroll", "salary", { amount: 100 });
  assert.deepEqual((await arriving).data, { amount: 100 });
  assert.throws(() => channel.trigger("client-x", {}), /not currently supported/, "pusher-js refuses client events");
});

test("a cache channel answers cache_miss when empty, then its last event to a new subscriber", async () => {
  const first = await connect();
  const missing = next(first.subscribe("cache-prices"), "pusher:cache_miss");
  await missing;
  await sdk(server).trigger("cache-prices", "price", { eur: 1 });
  await sdk(server).trigger("cache-prices", "price", { eur: 2 });
  const late = await connect();
  const cached = next(late.subscribe("cache-prices"), "price");
  assert.deepEqual((await cached).data, { eur: 2 });
});

test("client events reach the other subscribers of a private channel, never the sender", async () => {
  const [a, b] = [await connect(), await connect()];
  const [ca, cb] = [await subscribed(a, "private-chat"), await subscribed(b, "private-chat")];
  const echoed = collect(ca, "client-typing");
  const arriving = next(cb, "client-typing");
  assert.equal(ca.trigger("client-typing", { who: "a" }), true);
  assert.deepEqual((await arriving).data, { who: "a" });
  const marker = next(ca, "marker");
  await sdk(server).trigger("private-chat", "marker", {});
  await marker;
  assert.deepEqual(echoed, [], "the sender never gets its own client event");
});

test("the socket named in a trigger is excluded, the others get it", async () => {
  const [a, b] = [await connect(), await connect()];
  const [ca, cb] = [await subscribed(a, "room"), await subscribed(b, "room")];
  const excluded = collect(ca, "said");
  const arriving = next(cb, "said");
  await sdk(server).trigger("room", "said", { text: "hi" }, { socket_id: a.connection.socket_id });
  await arriving;
  const marker = next(ca, "marker");
  await sdk(server).trigger("room", "marker", {});
  await marker;
  assert.deepEqual(excluded, []);
});

test("batch events arrive in order", async () => {
  const pusher = await connect();
  const [x, y] = [await subscribed(pusher, "batch-x"), await subscribed(pusher, "batch-y")];
  const seen = [];
  x.bind("step", (data) => seen.push(data.n));
  y.bind("step", (data) => seen.push(data.n));
  const batch = [1, 2, 3, 4].map((n) => ({ channel: n % 2 ? "batch-x" : "batch-y", name: "step", data: { n } }));
  await sdk(server).triggerBatch(batch);
  await until(() => seen.length === 4, "four events");
  assert.deepEqual(seen, [1, 2, 3, 4]);
});

test("a signed-in user gets server-to-user events, and its connections are terminated on request", async () => {
  const user = await connect({ user: { id: "u42" } });
  const bystander = await connect({ user: { id: "u43" } });
  user.signin();
  await within(user.user.signinDonePromise, "the sign-in");
  assert.equal(user.user.user_data?.id, "u42");
  await until(() => user.user.serverToUserChannel?.subscribed, "the server-to-user channel");
  const hello = new Promise((resolve) => user.user.bind("hello", resolve));
  await sdk(server).sendToUser("u42", "hello", { n: 1 });
  assert.deepEqual(await within(hello, "the user's event"), { n: 1 });
  const closed = new Promise((resolve) => user.connection.bind("state_change", (s) => s.current !== "connected" && resolve(s)));
  await sdk(server).terminateUserConnections("u42");
  await within(closed, "the terminated connection");
  assert.equal(bystander.connection.state, "connected");
});

test("the Node SDK with a wrong secret gets a real 401", async () => {
  await assert.rejects(sdk(server, { secret: "not-the-secret" }).trigger("orders", "e", {}), (error) => {
    assert.equal(error.status, 401);
    return true;
  });
});

test("the Python SDK triggers, batches and terminates, and is refused with 401 for a wrong secret", async () => {
  const pusher = await connect();
  const channel = await subscribed(pusher, "from-python");
  const arriving = next(channel, "py");
  assert.deepEqual(await python(server, { op: "trigger", channels: ["from-python"], event: "py", data: { a: [1, 2] } }), {});
  assert.deepEqual((await arriving).data, { a: [1, 2] });
  const seen = collect(channel, "batch");
  const batch = [1, 2].map((n) => ({ channel: "from-python", name: "batch", data: { n } }));
  assert.deepEqual(await python(server, { op: "trigger_batch", batch }), {});
  await until(() => seen.length === 2, "the batch");
  assert.deepEqual(seen.map((s) => s.data.n), [1, 2]);
  assert.deepEqual(await python(server, { op: "terminate_user_connections", user_id: "nobody" }), {});
  const refused = await python(server, { op: "trigger", channels: ["a"], event: "e", data: "1" }, { secret: "wrong-secret" });
  assert.equal(refused.error, 401);
  assert.ok((await server.metric('herald_refusals_total{reason="pusher_signature"}')) >= 2);
});
