// Which transport the client uses, when it gives one up, and how long it waits before trying again.
import test from "node:test";
import assert from "node:assert/strict";
import { Herald, backoffDelay } from "../herald.js";
import { envelope, flush, query, setup } from "../testing/fakes.mjs";

test("backoff doubles per attempt, jitters within the upper half, and stops at the cap", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 10].map((attempt) => backoffDelay(attempt, 1000, 30000, () => 1)),
    [1000, 2000, 4000, 8000, 30000],
  );
  assert.deepEqual(
    [0, 1, 2].map((attempt) => backoffDelay(attempt, 1000, 30000, () => 0)),
    [500, 1000, 2000],
  );
  assert.equal(
    backoffDelay(1, 1000, 30000, () => 0.5),
    1500,
  );
});

test("two WebSocket failures before it ever opened fall back to SSE at once", async () => {
  const { herald, clock, net, states } = setup(Herald);
  herald.subscribe("dashboard", { last: 1 }, () => {});
  await flush();
  net.sockets[0].drop(1006);
  assert.deepEqual(clock.pendingDelays(), [1000]);
  await clock.advance(1000);
  net.sockets[1].drop(1006);
  assert.deepEqual(clock.pendingDelays(), [0]);
  await clock.advance(0);
  assert.equal(net.sockets.length, 2);
  assert.deepEqual(query(net.sources[0].url), [
    ["channel", "dashboard"],
    ["envelope", "true"],
    ["last", "1"],
  ]);
  net.sources[0].accept();
  assert.deepEqual(states, ["connecting:websocket", "connecting:sse", "connected:sse"]);
  assert.equal(herald.transport, "sse");
});

test("a transport that worked reconnects itself first, and falls back only when it keeps failing, losing nothing", async () => {
  const { herald, clock, net, states } = setup(Herald);
  const seen = [];
  herald.subscribe("dashboard", { last: 1 }, (_data, msg) => seen.push(msg.offset));
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "subscribed", channel: "dashboard", cursor: "dashboard-0", reset: false, id: 1 });
  ws.frame({ op: "message", ...envelope("dashboard", 1) });
  ws.frame({ op: "message", ...envelope("dashboard", 2) });
  ws.drop(1001);
  const delays = [clock.pendingDelays()];
  await clock.advance(1000);
  net.sockets[1].drop(1006);
  delays.push(clock.pendingDelays());
  await clock.advance(2000);
  net.sockets[2].drop(1006);
  delays.push(clock.pendingDelays());
  await clock.advance(0);
  assert.deepEqual(delays, [[1000], [2000], [0]]);
  const source = net.sources[0];
  assert.deepEqual(query(source.url), [
    ["channel", "dashboard"],
    ["envelope", "true"],
    ["since", "dashboard-2"],
  ]);
  source.accept();
  source.message(envelope("dashboard", 2));
  source.message(envelope("dashboard", 3));
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual(states, [
    "connecting:websocket",
    "connected:websocket",
    "reconnecting:websocket",
    "reconnecting:sse",
    "connected:sse",
  ]);
});

test("a poll answered 404 transport_disabled gives that transport up without a second try", async () => {
  const { herald, clock, net, states } = setup(Herald, { transports: ["long-poll", "sse"] });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  net.requests[0].respond(404, { error: { code: "transport_disabled", message: "poll is disabled" } });
  await flush();
  assert.deepEqual(clock.pendingDelays(), [0]);
  await clock.advance(0);
  assert.equal(net.requests.length, 1);
  assert.equal(net.sources.length, 1);
  assert.deepEqual(states, ["connecting:long-poll", "connecting:sse"]);
});

test("when every transport failed in a row the client is offline and starts over from the first, waiting longer", async () => {
  const { herald, clock, net, states } = setup(Herald, { transports: ["websocket", "sse"], failuresBeforeFallback: 1 });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  const delays = [];
  // A stream that cannot open is diagnosed with one fetch of its URL; here the network is down for that too.
  const streamDown = async (source) => {
    source.fail();
    await flush();
    net.requests.find((r) => r.url === source.url && !r.settled).fail();
    await flush();
  };
  net.sockets[0].drop();
  delays.push(...clock.pendingDelays());
  await clock.advance(0);
  await streamDown(net.sources[0]);
  delays.push(...clock.pendingDelays());
  await clock.advance(1000);
  net.sockets[1].drop();
  delays.push(...clock.pendingDelays());
  await clock.advance(0);
  await streamDown(net.sources[1]);
  delays.push(...clock.pendingDelays());
  await clock.advance(2000);
  net.sockets[2].accept();
  assert.deepEqual(delays, [0, 1000, 0, 2000]);
  assert.deepEqual(states, [
    "connecting:websocket",
    "connecting:sse",
    "offline:websocket",
    "offline:sse",
    "offline:websocket",
    "connected:websocket",
  ]);
});

test("a transport that does not open within connectTimeout counts as a failure", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["websocket"], connectTimeout: 5000 });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  await clock.advance(4999);
  assert.equal(net.sockets[0].closedByClient, null);
  await clock.advance(1);
  assert.equal(net.sockets[0].closedByClient, 1000);
  assert.deepEqual(clock.pendingDelays(), [1000]);
});

test("a transport the runtime lacks is skipped without waiting", async () => {
  const { herald, clock, net, states } = setup(Herald, { transports: ["sse", "long-poll"], EventSource: null });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  assert.deepEqual(clock.pendingDelays(), [0]);
  await clock.advance(0);
  assert.equal(net.requests.length, 1);
  assert.deepEqual(states, ["connecting:sse", "connecting:long-poll"]);
});

test("a failed long poll retries with backoff and resumes from the cursor, so nothing is lost or repeated", async () => {
  const { herald, clock, net, states } = setup(Herald, { transports: ["long-poll"] });
  const seen = [];
  herald.subscribe("dashboard", { last: 1 }, (_data, msg) => seen.push(msg.offset));
  await flush();
  net.requests[0].respond(200, { messages: [envelope("dashboard", 7)], cursor: "P1", reset: false });
  await flush();
  net.requests[1].fail();
  await flush();
  assert.deepEqual(clock.pendingDelays(), [1000]);
  await clock.advance(1000);
  assert.deepEqual(query(net.requests[2].url), [
    ["channel", "dashboard"],
    ["since", "dashboard-7"],
    ["limit", "100"],
    ["wait", "0"],
  ]);
  net.requests[2].respond(200, {
    messages: [envelope("dashboard", 7), envelope("dashboard", 8)],
    cursor: "P2",
    reset: false,
  });
  await flush();
  assert.deepEqual(seen, [7, 8]);
  assert.deepEqual(states, [
    "connecting:long-poll",
    "connected:long-poll",
    "reconnecting:long-poll",
    "connected:long-poll",
  ]);
});

test("a 429 waits at least Retry-After before the next attempt", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["poll"] });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  net.requests[0].respond(429, { error: { code: "too_many_requests", message: "slow down" } }, { "Retry-After": "7" });
  await flush();
  assert.deepEqual(clock.pendingDelays(), [7000]);
});

test("with pauseWhenHidden the client disconnects while hidden and resumes from its cursors when shown", async () => {
  const listeners = new Map();
  const document = {
    hidden: false,
    addEventListener: (name, fn) => listeners.set(name, fn),
    removeEventListener: (name) => listeners.delete(name),
  };
  const { herald, clock, net, states } = setup(Herald, { transports: ["websocket"], pauseWhenHidden: true, document });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  net.sockets[0].accept();
  net.sockets[0].frame({ op: "message", ...envelope("dashboard", 3) });
  document.hidden = true;
  listeners.get("visibilitychange")();
  assert.equal(net.sockets[0].closedByClient, 1000);
  assert.deepEqual(clock.pendingDelays(), []);
  document.hidden = false;
  listeners.get("visibilitychange")();
  net.sockets[1].accept();
  assert.deepEqual(net.sockets[1].sent, [{ op: "subscribe", channel: "dashboard", since: "dashboard-3", id: 1 }]);
  assert.deepEqual(states, [
    "connecting:websocket",
    "connected:websocket",
    "idle",
    "reconnecting:websocket",
    "connected:websocket",
  ]);
});

test("without pauseWhenHidden a hidden page stays connected", async () => {
  const document = { hidden: true, addEventListener: () => assert.fail("must not listen"), removeEventListener() {} };
  const { herald, net } = setup(Herald, { transports: ["websocket"], document });
  herald.subscribe("dashboard", {}, () => {});
  await flush();
  assert.equal(net.sockets.length, 1);
});
