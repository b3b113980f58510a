// One connection for the tabs of an origin: an elected tab runs it for all, every tab gets exactly the messages
// it subscribed to, and when the elected tab closes the next one takes over from the tabs' own cursors.
import test from "node:test";
import assert from "node:assert/strict";
import { Herald } from "../herald.js";
import { envelope, flush, query, setupTabs } from "../testing/fakes.mjs";

function record(herald, channel, options = {}) {
  const seen = [];
  herald.subscribe(channel, options, (_data, msg) => seen.push(`${msg.channel}#${msg.offset}`));
  return seen;
}

test("the tabs of an origin share one connection, and each gets only its own channels", async () => {
  const { net, tab } = setupTabs(Herald, { transports: ["sse"] });
  const [a, b] = [tab(), tab()];
  const aNews = record(a, "news");
  const bNews = record(b, "news");
  const bOrders = record(b, "orders:1");
  await flush();
  assert.deepEqual(a.sharing, { mode: "tab", leader: true });
  assert.deepEqual(b.sharing, { mode: "tab", leader: false });
  assert.equal(net.sources.filter((s) => !s.closed).length, 1, "one stream for both tabs");
  const source = net.sources.at(-1);
  assert.deepEqual(
    query(source.url).filter(([k]) => k === "channel"),
    [
      ["channel", "news"],
      ["channel", "orders:1"],
    ],
  );
  source.accept();
  await flush();
  assert.deepEqual(b.state, { state: "connected", transport: "sse" }, "every tab hears the state");
  source.message(envelope("news", 1));
  source.message(envelope("orders:1", 1));
  source.message(envelope("news", 2));
  await flush();
  assert.deepEqual(aNews, ["news#1", "news#2"]);
  assert.deepEqual(bNews, ["news#1", "news#2"]);
  assert.deepEqual(bOrders, ["orders:1#1"]);
});

test("when the elected tab closes, the next takes over from the tabs' cursors, with no gap and no repeat", async () => {
  const { net, tab } = setupTabs(Herald, { transports: ["sse"] });
  const [a, b, c] = [tab(), tab(), tab()];
  record(a, "news");
  const bSeen = record(b, "news");
  const cSeen = record(c, "news");
  await flush();
  const first = net.sources.at(-1);
  first.accept();
  for (const offset of [1, 2, 3]) first.message(envelope("news", offset));
  await flush();
  a.close();
  await flush();
  assert.equal(first.closed, true, "the closed tab's stream went with it");
  assert.equal([b, c].filter((t) => t.sharing.leader).length, 1, "one tab took over");
  const second = net.sources.at(-1);
  assert.notEqual(second, first);
  assert.ok(query(second.url).some(([k, v]) => k === "since" && v === "news-3"), second.url);
  second.accept();
  for (const offset of [3, 4]) second.message(envelope("news", offset));
  await flush();
  assert.deepEqual(bSeen, ["news#1", "news#2", "news#3", "news#4"]);
  assert.deepEqual(cSeen, ["news#1", "news#2", "news#3", "news#4"]);
});

test("a tab that joins from further back rewinds the shared connection; the others see nothing twice", async () => {
  const { net, clock, tab } = setupTabs(Herald, { transports: ["sse"] });
  const a = tab();
  const aSeen = record(a, "news");
  await flush();
  const first = net.sources.at(-1);
  first.accept();
  for (const offset of [5, 6]) first.message(envelope("news", offset));
  await flush();
  const b = tab();
  const bSeen = record(b, "news", { last: 2 });
  await flush();
  await clock.advance(100);
  const second = net.sources.at(-1);
  assert.notEqual(second, first, "the connection started over");
  assert.ok(query(second.url).some(([k, v]) => k === "last" && v === "2"), second.url);
  second.accept();
  for (const offset of [5, 6, 7]) second.message(envelope("news", offset));
  await flush();
  assert.deepEqual(aSeen, ["news#5", "news#6", "news#7"]);
  assert.deepEqual(bSeen, ["news#5", "news#6", "news#7"]);
});

test("publishing from a tab that does not run the connection goes through the one that does", async () => {
  const { net, tab } = setupTabs(Herald, { transports: ["websocket"] });
  const [a, b] = [tab(), tab()];
  record(a, "chat:lobby");
  await flush();
  const ws = net.sockets.at(-1);
  ws.accept();
  await flush();
  const published = b.publish("chat:lobby", "said", { text: "hi" });
  await flush();
  const frame = ws.sent.find((f) => f.op === "publish");
  assert.deepEqual({ ...frame, id: 0 }, { op: "publish", channel: "chat:lobby", data: { text: "hi" }, event: "said", id: 0 });
  ws.frame({ op: "published", id: frame.id, channel: "chat:lobby", offset: 1, cursor: "chat:lobby-1" });
  await flush();
  assert.equal((await published).offset, 1);
});

test("share: false keeps a connection per tab, and an unknown mode is refused", async () => {
  const { net, tab } = setupTabs(Herald, { transports: ["sse"], share: false });
  const [a, b] = [tab(), tab()];
  record(a, "news");
  record(b, "news");
  await flush();
  assert.equal(net.sources.length, 2);
  assert.deepEqual(a.sharing, { mode: "off", leader: false });
  assert.throws(() => tab({ share: "sometimes" }), /share must be one of/);
});

test("the elected tab's token serves every tab, and a new one from setToken reaches the shared connection", async () => {
  const { net, tab } = setupTabs(Herald, { transports: ["sse"] });
  const a = tab({ token: "token-a" });
  const b = tab({ token: "token-b" });
  record(a, "user:u1");
  record(b, "user:u1");
  await flush();
  assert.ok(query(net.sources.at(-1).url).some(([k, v]) => k === "token" && v === "token-a"));
  a.setToken("token-a2");
  await flush();
  assert.ok(query(net.sources.at(-1).url).some(([k, v]) => k === "token" && v === "token-a2"), net.sources.at(-1).url);
  a.close();
  await flush();
  assert.ok(query(net.sources.at(-1).url).some(([k, v]) => k === "token" && v === "token-b"), "the next tab's own");
});

test("clients with other transports do not share: each shape of connection has its own", async () => {
  const { net, tab } = setupTabs(Herald, {});
  const sse = tab({ transports: ["sse"] });
  const poll = tab({ transports: ["long-poll"] });
  record(sse, "news");
  record(poll, "news");
  await flush();
  assert.deepEqual([sse.sharing.leader, poll.sharing.leader], [true, true]);
  assert.equal(net.sources.length, 1);
  assert.equal(net.requests.length, 1);
});
