// One connection for all of a page's subscriptions; filters, unsubscribing and publishing on top of it.
import test from "node:test";
import assert from "node:assert/strict";
import { Herald, HeraldError } from "../herald.js";
import { envelope, flush, query, setup } from "../testing/fakes.mjs";

test("every subscription of a client shares one connection", async () => {
  for (const [kind, opened] of [
    ["websocket", (net) => net.sockets.length],
    ["sse", (net) => net.sources.length],
    ["long-poll", (net) => net.requests.length],
  ]) {
    const { herald, net } = setup(Herald, { transports: [kind] });
    for (const channel of ["dashboard", "orders:1001", "notifications"]) herald.subscribe(channel, {}, () => {});
    await flush();
    assert.equal(opened(net), 1, kind);
  }
});

test("the event option passes only that event to the handler, while the message event sees all", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"] });
  const filtered = [];
  const all = [];
  herald.subscribe("dashboard", { event: "newTopSeller" }, (data) => filtered.push(data.top_seller));
  herald.on("message", (msg) => all.push(msg.event));
  await flush();
  net.sources[0].accept();
  net.sources[0].message(envelope("dashboard", 1, { top_seller: "Hassan" }));
  net.sources[0].message(envelope("dashboard", 2, { note: "x" }, "other"));
  net.sources[0].message(envelope("dashboard", 3, { top_seller: "Ahmed" }));
  assert.deepEqual(filtered, ["Hassan", "Ahmed"]);
  assert.deepEqual(all, ["newTopSeller", "other", "newTopSeller"]);
});

test("unsubscribing sends unsubscribe on the WebSocket; the last one closes the connection", async () => {
  const { herald, net, states } = setup(Herald, { transports: ["websocket"] });
  const seen = [];
  const a = herald.subscribe("a", {}, (_d, msg) => seen.push(`${msg.channel}#${msg.offset}`));
  const b = herald.subscribe("b", {}, (_d, msg) => seen.push(`${msg.channel}#${msg.offset}`));
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  a.unsubscribe();
  a.unsubscribe();
  await flush();
  ws.frame({ op: "message", ...envelope("a", 1) });
  ws.frame({ op: "message", ...envelope("b", 1) });
  assert.deepEqual(
    ws.sent.map((f) => `${f.op}:${f.channel}`),
    ["subscribe:a", "subscribe:b", "unsubscribe:a"],
  );
  b.unsubscribe();
  await flush();
  assert.equal(ws.closedByClient, 1000);
  assert.deepEqual(seen, ["b#1"]);
  assert.deepEqual(states, ["connecting:websocket", "connected:websocket", "idle"]);
});

test("two subscribers of one channel share it; the channel stays until the last one leaves", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"] });
  const first = herald.subscribe("dashboard", {}, () => {});
  const seen = [];
  herald.subscribe("dashboard", {}, (_d, msg) => seen.push(msg.offset));
  await flush();
  first.unsubscribe();
  await flush();
  assert.equal(net.sources.length, 1);
  net.sources[0].accept();
  net.sources[0].message(envelope("dashboard", 1));
  assert.deepEqual(seen, [1]);
});

test("a handler that throws is reported and the stream goes on", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"] });
  const errors = [];
  const seen = [];
  herald.on("error", (error) => errors.push(error.message));
  herald.subscribe("dashboard", {}, (_d, msg) => {
    if (msg.offset === 1) throw new Error("boom");
    seen.push(msg.offset);
  });
  await flush();
  net.sources[0].accept();
  net.sources[0].message(envelope("dashboard", 1));
  net.sources[0].message(envelope("dashboard", 2));
  assert.deepEqual(errors, ["boom"]);
  assert.deepEqual(seen, [2]);
});

test("subscribe refuses a channel name the server would refuse", () => {
  const { herald } = setup(Herald);
  assert.throws(() => herald.subscribe("no spaces", {}, () => {}), TypeError);
  assert.throws(() => herald.subscribe("x".repeat(256), {}, () => {}), TypeError);
});

test("unknown transports are refused at construction", () => {
  assert.throws(
    () => setup(Herald, { transports: ["websocket", "carrier-pigeon"] }),
    /unknown transport "carrier-pigeon"/,
  );
  assert.throws(() => setup(Herald, { transports: [] }), TypeError);
});

test("publish goes over the open WebSocket and resolves with the server's ack", async () => {
  const { herald, net } = setup(Herald, { transports: ["websocket"] });
  herald.subscribe("chat:lobby", {}, () => {});
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  const ack = herald.publish("chat:lobby", "chat", { user: "guest-1", text: "hi" });
  assert.deepEqual(ws.sent.at(-1), {
    op: "publish",
    channel: "chat:lobby",
    event: "chat",
    data: { user: "guest-1", text: "hi" },
    id: 2,
  });
  ws.frame({
    op: "published",
    channel: "chat:lobby",
    offset: 8,
    cursor: "c8",
    time: "2026-11-28T02:31:48.123Z",
    id: 2,
  });
  assert.deepEqual(await ack, { channel: "chat:lobby", offset: 8, cursor: "c8", time: "2026-11-28T02:31:48.123Z" });
  assert.equal(net.requests.length, 0);
});

test("a publish the server refuses on the WebSocket rejects with its code", async () => {
  const { herald, net } = setup(Herald, { transports: ["websocket"] });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  net.sockets[0].accept();
  const ack = herald.publish("dashboard", "x", 1);
  net.sockets[0].frame({ op: "error", id: 2, code: "client_publish_forbidden", message: "no" });
  await assert.rejects(ack, (error) => error instanceof HeraldError && error.code === "client_publish_forbidden");
});

test("a publish in flight when the WebSocket drops rejects instead of hanging", async () => {
  const { herald, net } = setup(Herald, { transports: ["websocket"] });
  herald.subscribe("chat:lobby", {}, () => {});
  await flush();
  net.sockets[0].accept();
  const ack = herald.publish("chat:lobby", "chat", {});
  net.sockets[0].drop(1006);
  await assert.rejects(ack, (error) => error.code === "connection_lost");
});

test("without an open WebSocket, publish POSTs to the channel's messages", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"] });
  const ack = herald.publish("orders/42", "orderStatus", { status: "pending" });
  await flush();
  const [request] = net.requests;
  assert.equal(request.url, "http://herald.test/v1/channels/orders%2F42/messages");
  assert.equal(request.init.method, "POST");
  assert.equal(request.init.headers["Content-Type"], "application/json");
  assert.deepEqual(JSON.parse(request.init.body), { data: { status: "pending" }, event: "orderStatus" });
  request.respond(201, { channel: "orders/42", offset: 1, cursor: "c1", time: "t" });
  assert.deepEqual(await ack, { channel: "orders/42", offset: 1, cursor: "c1", time: "t" });
});

test("an HTTP publish error rejects with the API's code and status", async () => {
  const { herald, net } = setup(Herald, { transports: ["poll"] });
  const ack = herald.publish("dashboard", null, "x".repeat(10));
  await flush();
  assert.deepEqual(JSON.parse(net.requests[0].init.body), { data: "xxxxxxxxxx" });
  net.requests[0].respond(413, { error: { code: "payload_too_large", message: "too big" } });
  await assert.rejects(ack, (error) => error.code === "payload_too_large" && error.status === 413);
});

test("a base URL with a path prefix keeps it for every endpoint", async () => {
  const { herald, net } = setup(Herald, { transports: ["websocket"] });
  herald.close();
  const prefixed = new Herald("https://example.test/herald/", { WebSocket: net.WebSocket, transports: ["websocket"] });
  prefixed.subscribe("dashboard", {}, () => {});
  await flush();
  assert.equal(net.sockets[0].url, "wss://example.test/herald/v1/ws");
  prefixed.close();
});

test("close() ends the connection and every pending retry", async () => {
  const { herald, clock, net, states } = setup(Herald, { transports: ["sse"] });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  net.sources[0].fail();
  await flush();
  net.requests[0].fail(); // the diagnosis of the stream that could not open: the network is down
  await flush();
  assert.deepEqual(clock.pendingDelays(), [1000]);
  herald.close();
  assert.deepEqual(clock.pendingDelays(), []);
  await clock.advance(60000);
  assert.equal(net.sources.length, 1);
  assert.equal(states.at(-1), "idle");
  assert.throws(() => herald.subscribe("dashboard", {}, () => {}), /closed/);
});

test("URLs encode channel names safely in the query", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"] });
  herald.subscribe("orders/42", {}, () => {});
  herald.subscribe("user:a@b=c", {}, () => {});
  await flush();
  assert.deepEqual(
    query(net.sources[0].url)
      .filter(([k]) => k === "channel")
      .map(([, v]) => v),
    ["orders/42", "user:a@b=c"],
  );
});
