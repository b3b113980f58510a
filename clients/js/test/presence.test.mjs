// Following who is in a channel: one list per channel, kept from whole lists and single changes, over every
// transport, telling the page only what changed.
import test from "node:test";
import assert from "node:assert/strict";
import { Herald } from "../herald.js";
import { flush, query, setup } from "../testing/fakes.mjs";

const ada = { user_id: "ada", user_info: { name: "Ada" } };
const bob = { user_id: "bob", user_info: null };
const carol = { user_id: "carol", user_info: null };

/** A presence watcher that records what it was told. */
function recorder(herald, channel) {
  const told = [];
  const presence = herald.presence(channel, {
    onJoin: (m) => told.push(`join ${m.user_id}`),
    onLeave: (m) => told.push(`leave ${m.user_id}`),
    onChange: (members) => told.push(`list ${members.map((m) => m.user_id).join(",")}`),
  });
  return { told, presence };
}

test("over a WebSocket, presence subscribes, asks for the members, then follows joins and leaves", async () => {
  const { herald, net } = setup(Herald);
  const { told, presence } = recorder(herald, "chat:lobby");
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  assert.deepEqual(
    ws.sent.map((f) => [f.op, f.channel]),
    [
      ["subscribe", "chat:lobby"],
      ["presence", "chat:lobby"],
    ],
  );
  ws.frame({ op: "subscribed", channel: "chat:lobby", cursor: "c-0", reset: false, id: ws.sent[0].id });
  ws.frame({ op: "presence", channel: "chat:lobby", members: [ada, bob], count: 2, id: ws.sent[1].id });
  ws.frame({ op: "join", channel: "chat:lobby", member: carol });
  ws.frame({ op: "join", channel: "chat:lobby", member: carol });
  ws.frame({ op: "leave", channel: "chat:lobby", member: ada });
  assert.deepEqual(told, ["list ada,bob", "join carol", "list ada,bob,carol", "leave ada", "list bob,carol"]);
  assert.deepEqual(
    presence.members.map((m) => m.user_id),
    ["bob", "carol"],
  );
});

test("after a reconnect the new list tells only what changed meanwhile", async () => {
  const { herald, net, clock } = setup(Herald);
  const { told } = recorder(herald, "chat:lobby");
  await flush();
  let ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "presence", channel: "chat:lobby", members: [ada, bob], count: 2 });
  ws.drop(1001);
  await clock.advance(1000);
  ws = net.sockets[1];
  ws.accept();
  assert.ok(ws.sent.some((f) => f.op === "presence" && f.channel === "chat:lobby"), "asked again");
  ws.frame({ op: "presence", channel: "chat:lobby", members: [bob, carol], count: 2 });
  assert.deepEqual(told, ["list ada,bob", "leave ada", "join carol", "list bob,carol"]);
});

test("a channel already subscribed gets a presence frame when its presence is followed later", async () => {
  const { herald, net } = setup(Herald);
  herald.subscribe("chat:lobby", () => {});
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  assert.deepEqual(
    ws.sent.map((f) => f.op),
    ["subscribe"],
  );
  recorder(herald, "chat:lobby");
  await flush();
  assert.deepEqual(
    ws.sent.map((f) => f.op),
    ["subscribe", "presence"],
  );
});

test("over SSE the stream asks for presence and its events feed the list", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"] });
  const { told } = recorder(herald, "chat:lobby");
  herald.subscribe("dashboard", () => {});
  await flush();
  const source = net.sources[0];
  assert.deepEqual(
    query(source.url).filter(([k]) => k !== "since"),
    [
      ["channel", "chat:lobby"],
      ["channel", "dashboard"],
      ["envelope", "true"],
      ["presence", "true"],
    ],
  );
  source.accept();
  source.named("herald.presence", { channel: "chat:lobby", members: [ada], count: 1 });
  source.named("herald.join", { channel: "chat:lobby", member: bob });
  source.named("herald.leave", { channel: "chat:lobby", member: ada });
  source.named("herald.join", { channel: "dashboard", member: carol });
  assert.deepEqual(told, ["list ada", "join bob", "list ada,bob", "leave ada", "list bob"]);
});

test("over polling the members are read from the presence endpoint every pollInterval", async () => {
  const { herald, net, clock } = setup(Herald, { transports: ["poll"], token: "t0k3n" });
  const { told } = recorder(herald, "chat:lobby");
  await flush();
  const reads = () => net.requests.filter((r) => r.url.includes("/presence"));
  assert.equal(reads().length, 1);
  assert.equal(reads()[0].url, "http://herald.test/v1/channels/chat:lobby/presence");
  assert.equal(reads()[0].init.headers.Authorization, "Bearer t0k3n");
  reads()[0].respond(200, { channel: "chat:lobby", members: [ada, bob], count: 2 });
  await flush();
  await clock.advance(3000);
  assert.equal(reads().length, 2);
  reads()[1].respond(200, { channel: "chat:lobby", members: [bob], count: 1 });
  await flush();
  assert.deepEqual(told, ["list ada,bob", "leave ada", "list bob"]);
});

test("stop() ends the watch: nothing more is told, and the channel is unsubscribed", async () => {
  const { herald, net } = setup(Herald);
  const { told, presence } = recorder(herald, "chat:lobby");
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "presence", channel: "chat:lobby", members: [ada], count: 1 });
  presence.stop();
  await flush();
  ws.frame({ op: "join", channel: "chat:lobby", member: bob });
  assert.deepEqual(told, ["list ada"]);
  assert.equal(ws.closedByClient, 1000, "its only subscription is gone");
});

test("a handler that throws is reported and the others are still told", async () => {
  const { herald, net, errors } = setup(Herald);
  herald.presence("chat:lobby", {
    onChange: () => {
      throw new Error("boom");
    },
  });
  const { told } = recorder(herald, "chat:lobby");
  await flush();
  net.sockets[0].accept();
  net.sockets[0].frame({ op: "presence", channel: "chat:lobby", members: [ada], count: 1 });
  assert.deepEqual(told, ["list ada"]);
  assert.equal(errors.length, 1);
});
