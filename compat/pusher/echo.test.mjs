// Laravel Echo 2.5.0, loaded with import(), unmodified, with both of its Pusher-protocol broadcasters (`pusher` and
// `reverb`) against one Herald: Laravel's event names, private channels, whispers (client events), toOthers()
// (socket_id exclusion) and encrypted channels, the backend being the `pusher` Node SDK as Laravel's would be.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import Pusher from "pusher-js";
import { APP, collect, sdk, startHerald, until, within } from "./harness.mjs";

const { default: Echo } = await import("laravel-echo");

let server;
const echoes = [];

before(async () => {
  // A short presence grace, so that leaving() comes at once.
  server = await startHerald({ config: "presence_grace_ms = 100" });
});

after(async () => {
  for (const echo of echoes) echo.disconnect();
  await server?.stop();
});

/** An Echo on `broadcaster`, connected; its backend signs authorizations with the Node SDK. */
async function echo(broadcaster) {
  const backend = sdk(server);
  const instance = new Echo({
    broadcaster,
    key: APP.key,
    cluster: "",
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    Pusher,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) =>
        callback(null, backend.authorizeChannel(socketId, channelName)),
    },
  });
  echoes.push(instance);
  await until(() => instance.connectionStatus() === "connected", `${broadcaster} Echo connected`);
  return instance;
}

/** Resolves with the next payload a listener of Echo's channel gets. */
function heard(channel, event, method = "listen") {
  return within(new Promise((resolve) => channel[method](event, resolve)), `${event} on ${channel.name}`);
}

/** Resolves once Echo's channel is subscribed. */
function ready(channel) {
  return within(new Promise((resolve) => channel.subscribed(resolve)), `the subscription to ${channel.name}`);
}

for (const broadcaster of ["pusher", "reverb"]) {
  test(`${broadcaster}: a Laravel event (App\\Events\\OrderShipped) and a broadcastAs name reach listen()`, async () => {
    const client = await echo(broadcaster);
    const channel = client.channel(`orders-${broadcaster}`);
    await ready(channel);
    const shipped = heard(channel, "OrderShipped");
    await sdk(server).trigger(`orders-${broadcaster}`, "App\\Events\\OrderShipped", { order: { id: 7 } });
    assert.deepEqual(await shipped, { order: { id: 7 } });
    const custom = heard(channel, ".order.shipped");
    await sdk(server).trigger(`orders-${broadcaster}`, "order.shipped", { id: 8 });
    assert.deepEqual(await custom, { id: 8 });
  });

  test(`${broadcaster}: a private channel, and a whisper heard by the other client only`, async () => {
    const [a, b] = [await echo(broadcaster), await echo(broadcaster)];
    const name = `chat.${broadcaster}`;
    const [pa, pb] = [a.private(name), b.private(name)];
    await Promise.all([ready(pa), ready(pb)]);
    const paid = heard(pb, "InvoicePaid");
    await sdk(server).trigger(`private-${name}`, "App\\Events\\InvoicePaid", { total: 12 });
    assert.deepEqual(await paid, { total: 12 });
    const echoed = [];
    pa.listenForWhisper("typing", (e) => echoed.push(e));
    const typing = heard(pb, "typing", "listenForWhisper");
    pa.whisper("typing", { name: "Ann" });
    assert.deepEqual(await typing, { name: "Ann" });
    const marker = heard(pa, ".marker");
    await sdk(server).trigger(`private-${name}`, "marker", {});
    await marker;
    assert.deepEqual(echoed, [], "a whisper is not sent back to its sender");
  });

  test(`${broadcaster}: toOthers() — an event triggered with the sender's socket id skips the sender`, async () => {
    const [sender, other] = [await echo(broadcaster), await echo(broadcaster)];
    const name = `room-${broadcaster}`;
    const [cs, co] = [sender.channel(name), other.channel(name)];
    await Promise.all([ready(cs), ready(co)]);
    const skipped = collect(cs.subscription, "said");
    const arriving = heard(co, ".said");
    // What Laravel does for broadcast(...)->toOthers(): the request carried X-Socket-ID, the trigger names it.
    await sdk(server).trigger(name, "said", { text: "hi" }, { socket_id: sender.socketId() });
    assert.deepEqual(await arriving, { text: "hi" });
    const marker = heard(cs, ".marker");
    await sdk(server).trigger(name, "marker", {});
    await marker;
    assert.deepEqual(skipped, []);
  });

  test(`${broadcaster}: an encrypted private channel is decrypted by the client`, async () => {
    const client = await echo(broadcaster);
    const channel = client.encryptedPrivate(`vault.${broadcaster}`);
    await ready(channel);
    const secret = heard(channel, "Opened");
    await sdk(server).trigger(`private-encrypted-vault.${broadcaster}`, "App\\Events\\Opened", { code: 1234 });
    assert.deepEqual(await secret, { code: 1234 });
  });
}

for (const broadcaster of ["pusher", "reverb"]) {
  test(`${broadcaster}: join() tells here(), joining() and leaving()`, async () => {
    const backend = sdk(server);
    const echoAs = async (user) => {
      const instance = new Echo({
        broadcaster,
        key: APP.key,
        cluster: "",
        wsHost: server.host,
        wsPort: server.port,
        forceTLS: false,
        enabledTransports: ["ws"],
        disableStats: true,
        Pusher,
        channelAuthorization: {
          customHandler: ({ socketId, channelName }, callback) =>
            callback(null, backend.authorizeChannel(socketId, channelName, { user_id: user.id, user_info: user })),
        },
      });
      echoes.push(instance);
      await until(() => instance.connectionStatus() === "connected", "Echo connected");
      return instance;
    };
    const room = `room.${broadcaster}`;
    const ann = await echoAs({ id: "ann", name: "Ann" });
    const [joining, leaving] = [[], []];
    const here = await within(
      new Promise((resolve) =>
        ann
          .join(room)
          .here(resolve)
          .joining((u) => joining.push(u))
          .leaving((u) => leaving.push(u)),
      ),
      "here()",
    );
    assert.deepEqual(here, [{ id: "ann", name: "Ann" }]);
    const bob = await echoAs({ id: "bob", name: "Bob" });
    await within(new Promise((resolve) => bob.join(room).here(resolve)), "bob's here()");
    await until(() => joining.length === 1, "bob joining");
    bob.leave(room);
    await until(() => leaving.length === 1, "bob leaving");
    assert.deepEqual([joining, leaving], [[{ id: "bob", name: "Bob" }], [{ id: "bob", name: "Bob" }]]);
  });
}
