// The promise of the client: whatever the transport, after any reconnect every channel resumes from its own
// cursor, and no message is shown twice.
import test from "node:test";
import assert from "node:assert/strict";
import { Herald } from "../herald.js";
import { envelope, flush, query, setup } from "../testing/fakes.mjs";

function record(herald, channel, options = {}) {
  const seen = [];
  herald.subscribe(channel, options, (_data, msg) => seen.push(`${msg.channel}#${msg.offset}`));
  return seen;
}

test("websocket resubscribes every channel from its own cursor after a drop", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["websocket"] });
  const dashboard = record(herald, "dashboard", { last: 1 });
  const orders = record(herald, "orders:1");
  await flush();
  const first = net.sockets[0];
  assert.equal(first.url, "ws://herald.test/v1/ws");
  first.accept();
  assert.deepEqual(first.sent, [
    { op: "subscribe", channel: "dashboard", last: 1, id: 1 },
    { op: "subscribe", channel: "orders:1", id: 2 },
  ]);
  first.frame({ op: "subscribed", channel: "dashboard", cursor: "dashboard-6", reset: false, id: 1 });
  first.frame({ op: "subscribed", channel: "orders:1", cursor: "orders:1-0", reset: false, id: 2 });
  first.frame({ op: "message", ...envelope("dashboard", 7) });
  first.frame({ op: "message", ...envelope("dashboard", 8) });
  first.drop(1006);

  await clock.advance(1000);
  const second = net.sockets[1];
  second.accept();
  assert.deepEqual(second.sent, [
    { op: "subscribe", channel: "dashboard", since: "dashboard-8", id: 1 },
    { op: "subscribe", channel: "orders:1", since: "orders:1-0", id: 2 },
  ]);
  second.frame({ op: "subscribed", channel: "dashboard", cursor: "dashboard-8", reset: false, id: 1 });
  second.frame({ op: "message", ...envelope("dashboard", 9) });
  second.frame({ op: "message", ...envelope("orders:1", 1) });
  assert.deepEqual(dashboard, ["dashboard#7", "dashboard#8", "dashboard#9"]);
  assert.deepEqual(orders, ["orders:1#1"]);
});

test("a message at or below the last delivered offset is dropped, until a reset starts the channel over", async () => {
  const { herald, net, resets } = setup(Herald, { transports: ["sse"] });
  const seen = record(herald, "dashboard");
  await flush();
  const source = net.sources[0];
  source.accept();
  for (const offset of [1, 2, 2, 1, 3]) source.message(envelope("dashboard", offset));
  source.named("herald.reset", { channels: ["dashboard"] });
  for (const offset of [1, 2]) source.message(envelope("dashboard", offset));
  assert.deepEqual(seen, ["dashboard#1", "dashboard#2", "dashboard#3", "dashboard#1", "dashboard#2"]);
  assert.deepEqual(resets, ["dashboard"]);
});

test("a restarted SSE stream passes stream cursors first, own cursors last, and last=N only for new channels", async () => {
  const { herald, net, states } = setup(Herald, { transports: ["sse"] });
  record(herald, "dashboard", { last: 1 });
  record(herald, "notifications");
  await flush();
  const first = net.sources[0];
  assert.equal(first.url.split("?")[0], "http://herald.test/v1/sse");
  assert.deepEqual(query(first.url), [
    ["channel", "dashboard"],
    ["channel", "notifications"],
    ["envelope", "true"],
    ["last", "1"],
  ]);
  first.accept();
  first.message(envelope("dashboard", 5), "S1");

  record(herald, "orders:1", { last: 2 });
  await flush();
  assert.equal(first.closed, true);
  assert.deepEqual(query(net.sources[1].url), [
    ["channel", "dashboard"],
    ["channel", "notifications"],
    ["channel", "orders:1"],
    ["envelope", "true"],
    ["since", "S1"],
    ["since", "dashboard-5"],
    ["last", "2"],
  ]);
  net.sources[1].accept();
  assert.deepEqual(states, ["connecting:sse", "connected:sse"]);
});

test("a long poll asks once without waiting, then holds with wait=25, resuming from every cursor", async () => {
  const { herald, net, resets } = setup(Herald, { transports: ["long-poll"] });
  const dashboard = record(herald, "dashboard", { last: 1 });
  const orders = record(herald, "orders:1001");
  await flush();
  const urls = () => net.requests.map((r) => query(r.url));
  net.requests[0].respond(200, { messages: [envelope("dashboard", 4)], cursor: "P1", reset: false });
  await flush();
  net.requests[1].respond(200, {
    messages: [envelope("orders:1001", 1), envelope("dashboard", 5)],
    cursor: "P2",
    reset: false,
  });
  await flush();
  net.requests[2].respond(200, {
    messages: [envelope("dashboard", 1), envelope("dashboard", 2)],
    cursor: "P3",
    reset: true,
    reset_channels: ["dashboard"],
  });
  await flush();
  assert.equal(net.requests[0].url.split("?")[0], "http://herald.test/v1/poll");
  assert.deepEqual(urls(), [
    [
      ["channel", "dashboard"],
      ["channel", "orders:1001"],
      ["last", "1"],
      ["limit", "100"],
      ["wait", "0"],
    ],
    [
      ["channel", "dashboard"],
      ["channel", "orders:1001"],
      ["since", "P1"],
      ["since", "dashboard-4"],
      ["limit", "100"],
      ["wait", "25"],
    ],
    [
      ["channel", "dashboard"],
      ["channel", "orders:1001"],
      ["since", "dashboard-5"],
      ["since", "orders:1001-1"],
      ["limit", "100"],
      ["wait", "25"],
    ],
    [
      ["channel", "dashboard"],
      ["channel", "orders:1001"],
      ["since", "dashboard-2"],
      ["since", "orders:1001-1"],
      ["limit", "100"],
      ["wait", "25"],
    ],
  ]);
  assert.deepEqual(dashboard, ["dashboard#4", "dashboard#5", "dashboard#1", "dashboard#2"]);
  assert.deepEqual(orders, ["orders:1001#1"]);
  assert.deepEqual(resets, ["dashboard"]);
});

test("a channel subscribed without last asks a poll for only what comes next (last=0)", async () => {
  const { herald, net } = setup(Herald, { transports: ["poll"] });
  record(herald, "notifications");
  await flush();
  assert.deepEqual(query(net.requests[0].url), [
    ["channel", "notifications"],
    ["last", "0"],
    ["limit", "100"],
    ["wait", "0"],
  ]);
});

test("a short poll waits pollInterval between answers, but asks again at once after a full answer", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["poll"], pollInterval: 3000, pollLimit: 2 });
  const seen = record(herald, "orders:1001", { last: 1 });
  await flush();
  net.requests[0].respond(200, {
    messages: [envelope("orders:1001", 1), envelope("orders:1001", 2)],
    cursor: "P1",
    reset: false,
  });
  await flush();
  assert.equal(net.requests.length, 2);
  net.requests[1].respond(200, { messages: [envelope("orders:1001", 3)], cursor: "P2", reset: false });
  await clock.advance(2999);
  assert.equal(net.requests.length, 2);
  await clock.advance(1);
  assert.equal(net.requests.length, 3);
  assert.deepEqual(
    net.requests.map((r) => new URL(r.url).searchParams.get("wait")),
    ["0", "0", "0"],
  );
  assert.deepEqual(new URL(net.requests[2].url).searchParams.getAll("since"), ["orders:1001-3"]);
  assert.deepEqual(seen, ["orders:1001#1", "orders:1001#2", "orders:1001#3"]);
});

test("a WebSocket subscription the server could not resume reports a reset and starts the channel over", async () => {
  const { herald, net, resets } = setup(Herald, { transports: ["websocket"] });
  const seen = record(herald, "dashboard", { since: "dashboard-40" });
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  assert.deepEqual(ws.sent, [{ op: "subscribe", channel: "dashboard", since: "dashboard-40", id: 1 }]);
  ws.frame({ op: "subscribed", channel: "dashboard", cursor: "dashboard-0", reset: true, id: 1 });
  ws.frame({ op: "message", ...envelope("dashboard", 1) });
  ws.frame({ op: "message", ...envelope("dashboard", 2) });
  assert.deepEqual(resets, ["dashboard"]);
  assert.deepEqual(seen, ["dashboard#1", "dashboard#2"]);
});

test("an unreadable cursor on the WebSocket is dropped: reset, then a subscription without it", async () => {
  const { herald, net, resets } = setup(Herald, { transports: ["websocket"] });
  record(herald, "dashboard", { since: "garbage", last: 1 });
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "error", id: 1, code: "invalid_cursor", message: "unreadable cursor" });
  assert.deepEqual(ws.sent, [
    { op: "subscribe", channel: "dashboard", since: "garbage", id: 1 },
    { op: "subscribe", channel: "dashboard", last: 1, id: 2 },
  ]);
  assert.deepEqual(resets, ["dashboard"]);
});

test("a quiet channel on SSE learns its position from one poll, and a new stream resumes from it", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["sse"] });
  record(herald, "notifications");
  record(herald, "dashboard", { since: "dashboard-3" });
  await flush();
  net.sources[0].accept();
  await flush();
  assert.deepEqual(
    net.requests.map((r) => query(r.url)),
    [
      [
        ["channel", "notifications"],
        ["last", "0"],
        ["limit", "1"],
        ["wait", "0"],
      ],
    ],
  );
  net.requests[0].respond(200, { messages: [], cursor: "Q1", reset: false, reset_channels: [] });
  await flush();
  net.sources[0].fail();
  await clock.advance(1000);
  assert.deepEqual(query(net.sources[1].url), [
    ["channel", "notifications"],
    ["channel", "dashboard"],
    ["envelope", "true"],
    ["since", "Q1"],
    ["since", "dashboard-3"],
  ]);
  net.sources[1].accept();
  await flush();
  assert.equal(net.requests.length, 1, "every channel has a position: no poll needed");
});
