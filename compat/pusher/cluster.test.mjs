// Herald nodes on one Redis, no sticky sessions, with the official clients on different nodes: presence with one
// user in two tabs on two nodes (member_added and member_removed once per user), user and subscription counts,
// client events, socket_id exclusion, server-to-user events and terminated connections across nodes, Laravel
// Echo's presence channel across nodes, and a node killed (SIGKILL) under a presence channel. Needs Redis
// (HERALD_TEST_REDIS_URL, as the cargo tests); each run uses a key prefix of its own.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import Pusher from "pusher-js";
import {
  APP,
  client,
  collect,
  connected,
  next,
  python,
  sdk,
  sleep,
  startHerald,
  subscribed,
  uniquePrefix,
  until,
  within,
} from "./harness.mjs";

const REDIS = process.env.HERALD_TEST_REDIS_URL;
const cluster = REDIS ? test : test.skip;
if (!REDIS) console.log("# skipped: HERALD_TEST_REDIS_URL is not set (.ci/run sets it)");

// Short presence settings, so that leaves and a dead node's members are seen in seconds.
const GRACE_MS = 300;
const NODE_TTL_SECS = 2;
const PRESENCE = `presence_grace_ms = ${GRACE_MS}\npresence_node_ttl_secs = ${NODE_TTL_SECS}\n`;

let prefix;
let one;
let two;
const clients = [];

before(async () => {
  if (!REDIS) return;
  prefix = uniquePrefix("cluster");
  one = await startHerald({ redis: REDIS, prefix, config: PRESENCE });
  two = await startHerald({ redis: REDIS, prefix, config: PRESENCE });
});

after(async () => {
  for (const pusher of clients) pusher.disconnect();
  await one?.stop();
  await two?.stop();
});

/** A connected pusher-js client of `node`. */
async function connect(node, options) {
  const pusher = client(node, options);
  clients.push(pusher);
  await connected(pusher);
  return pusher;
}

/** The presence channel's member ids, as pusher-js holds them. */
function ids(channel) {
  const seen = [];
  channel.members.each((member) => seen.push(member.id));
  return seen.sort();
}

cluster("presence: one user in two tabs on two nodes is added once and removed once, with its last tab", async () => {
  const bob = await connect(two, { user: { id: "bob", info: { name: "Bob" } } });
  const room = await subscribed(bob, "presence-lobby");
  const added = collect(room, "pusher:member_added");
  const removed = collect(room, "pusher:member_removed");
  const tab1 = await connect(one, { user: { id: "ann", info: { name: "Ann" } } });
  const tab2 = await connect(two, { user: { id: "ann", info: { name: "Ann" } } });
  const annRoom = await subscribed(tab1, "presence-lobby");
  await subscribed(tab2, "presence-lobby");
  assert.deepEqual(ids(annRoom), ["ann", "bob"], "the list holds the other node's member");
  await until(() => added.length === 1, "ann added");
  assert.deepEqual(added.map((a) => a.data), [{ id: "ann", info: { name: "Ann" } }]);
  await until(async () => {
    const info = await sdk(one).get({ path: "/channels/presence-lobby", params: { info: "user_count,subscription_count" } });
    const body = await info.json();
    return body.user_count === 2 && body.subscription_count === 3;
  }, "the counts of both nodes, read on node one");
  tab1.disconnect();
  await sleep(GRACE_MS * 3);
  assert.deepEqual(removed, [], "ann still has a tab");
  assert.equal(added.length, 1, "and was not added again");
  tab2.disconnect();
  await until(() => removed.length === 1, "ann removed");
  assert.deepEqual(removed.map((r) => r.data.id), ["ann"]);
  const users = await (await sdk(one).get({ path: "/channels/presence-lobby/users" })).json();
  assert.deepEqual(users, { users: [{ id: "bob" }] });
});

cluster("client events and socket_id exclusion reach across nodes", async () => {
  const [a, b, c] = [await connect(one), await connect(two), await connect(one)];
  const [ca, cb, cc] = [
    await subscribed(a, "private-floor"),
    await subscribed(b, "private-floor"),
    await subscribed(c, "private-floor"),
  ];
  const echoed = collect(ca, "client-move");
  const arriving = next(cb, "client-move");
  ca.trigger("client-move", { x: 1 });
  assert.deepEqual((await arriving).data, { x: 1 });
  const excluded = collect(ca, "placed");
  const onB = next(cb, "placed");
  const onC = next(cc, "placed");
  // Triggered through node two, naming a socket of node one.
  await sdk(two).trigger("private-floor", "placed", { id: 3 }, { socket_id: a.connection.socket_id });
  await Promise.all([onB, onC]);
  const marker = next(ca, "marker");
  await sdk(two).trigger("private-floor", "marker", {});
  await marker;
  assert.deepEqual(excluded, [], "the excluded socket is on the other node");
  assert.deepEqual(echoed, [], "a client event is not echoed");
});

cluster("server-to-user events and terminated connections reach a user on another node", async () => {
  const user = await connect(one, { user: { id: "carol" } });
  user.signin();
  await within(user.user.signinDonePromise, "the sign-in");
  await until(() => user.user.serverToUserChannel?.subscribed, "the server-to-user channel");
  const hello = new Promise((resolve) => user.user.bind("hello", resolve));
  await sdk(two).sendToUser("carol", "hello", { n: 2 });
  assert.deepEqual(await within(hello, "the user's event"), { n: 2 });
  const closed = new Promise((resolve) => user.connection.bind("state_change", (s) => s.current !== "connected" && resolve()));
  await sdk(two).terminateUserConnections("carol");
  await within(closed, "the terminated connection");
});

cluster("the Python SDK reads channel counts that add up both nodes", async () => {
  const [a, b] = [await connect(one), await connect(two)];
  await subscribed(a, "counted");
  await subscribed(b, "counted");
  await until(async () => {
    const info = await python(one, { op: "channel_info", channel: "counted", attributes: ["subscription_count"] });
    return info.occupied === true && info.subscription_count === 2;
  }, "two subscribers, one per node");
  const listed = await python(two, { op: "channels_info", prefix_filter: "count", attributes: ["subscription_count"] });
  assert.deepEqual(listed, { channels: { counted: { subscription_count: 2 } } });
});

cluster("Echo's presence channel across nodes: here, joining and leaving", async () => {
  const { default: Echo } = await import("laravel-echo");
  const echo = (node, broadcaster, user) => {
    const backend = sdk(node);
    const instance = new Echo({
      broadcaster,
      key: APP.key,
      cluster: "",
      wsHost: node.host,
      wsPort: node.port,
      forceTLS: false,
      enabledTransports: ["ws"],
      disableStats: true,
      Pusher,
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) =>
          callback(null, backend.authorizeChannel(socketId, channelName, { user_id: user.id, user_info: user })),
      },
    });
    clients.push(instance.connector.pusher);
    return instance;
  };
  const dan = echo(one, "reverb", { id: "dan", name: "Dan" });
  const joined = [];
  const left = [];
  const here = await within(
    new Promise((resolve) =>
      dan
        .join("chat.1")
        .here(resolve)
        .joining((user) => joined.push(user))
        .leaving((user) => left.push(user)),
    ),
    "here()",
  );
  assert.deepEqual(here, [{ id: "dan", name: "Dan" }]);
  const eve = echo(two, "pusher", { id: "eve", name: "Eve" });
  const eveHere = await within(new Promise((resolve) => eve.join("chat.1").here(resolve)), "eve's here()");
  assert.deepEqual(eveHere.map((u) => u.id).sort(), ["dan", "eve"]);
  await until(() => joined.length === 1, "eve joining");
  assert.deepEqual(joined, [{ id: "eve", name: "Eve" }]);
  eve.leave("chat.1");
  await until(() => left.length === 1, "eve leaving");
  assert.deepEqual(left, [{ id: "eve", name: "Eve" }]);
});

cluster("a node killed under a presence channel: its members leave within 4/3 of presence_node_ttl_secs", async () => {
  const three = await startHerald({ redis: REDIS, prefix, config: PRESENCE });
  const watcher = await connect(two, { user: { id: "watcher" } });
  const room = await subscribed(watcher, "presence-doomed");
  const removed = collect(room, "pusher:member_removed");
  const doomed = client(three, { user: { id: "frank" } });
  await connected(doomed);
  const joined = next(room, "pusher:member_added");
  await subscribed(doomed, "presence-doomed");
  assert.equal((await joined).data.id, "frank");
  const killedAt = Date.now();
  await three.stop("SIGKILL");
  doomed.disconnect();
  const bound = (NODE_TTL_SECS * 4000) / 3 + GRACE_MS + 2000;
  await until(() => removed.length === 1, "frank removed", bound);
  assert.deepEqual(removed.map((r) => r.data.id), ["frank"]);
  console.log(`# frank left ${Date.now() - killedAt} ms after his node was killed (bound ${bound} ms)`);
  await sleep(GRACE_MS * 2);
  assert.equal(removed.length, 1, "once");
});
