// An app's webhooks, in Pusher's format, checked by the official `pusher` Node SDK's webhook() exactly as a backend
// written for Pusher checks them: channel_occupied, member_added, client_event and cache_miss, signed with the
// app's key and secret, naming the app's channels as its clients do.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { client, connected, freePort, sdk, startHerald, subscribed, until } from "./harness.mjs";

let server;
let receiver;
const received = [];
const clients = [];

before(async () => {
  const port = await freePort();
  receiver = http.createServer((request, response) => {
    let rawBody = "";
    request.on("data", (chunk) => (rawBody += chunk));
    request.on("end", () => {
      received.push({ headers: request.headers, rawBody });
      response.writeHead(200).end();
    });
  });
  await new Promise((resolve) => receiver.listen(port, "127.0.0.1", resolve));
  server = await startHerald({ webhooks: [`http://127.0.0.1:${port}/pusher/webhook`], config: "presence_grace_ms = 100" });
});

after(async () => {
  for (const pusher of clients) pusher.disconnect();
  await server?.stop();
  receiver?.close();
});

test("the Node SDK's webhook() accepts Herald's webhooks and reads their events", async () => {
  const [ann, bob] = [client(server, { user: { id: "ann" } }), client(server, { user: { id: "bob" } })];
  clients.push(ann, bob);
  await Promise.all([connected(ann), connected(bob)]);
  const room = await subscribed(ann, "presence-room");
  await subscribed(bob, "presence-room");
  room.trigger("client-wave", { hi: 1 });
  bob.subscribe("cache-nothing-yet");
  const backend = sdk(server);
  const events = () =>
    received.flatMap((request) => {
      const webhook = backend.webhook(request);
      assert.ok(webhook.isValid(), "signed with the app's key and secret");
      return webhook.getEvents();
    });
  await until(() => ["client_event", "cache_miss"].every((name) => events().some((e) => e.name === name)), "the events");
  const all = events();
  assert.ok(all.some((e) => e.name === "channel_occupied" && e.channel === "presence-room"), JSON.stringify(all));
  assert.deepEqual(
    all.filter((e) => e.name === "member_added").map((e) => e.user_id),
    ["ann", "bob"],
  );
  const wave = all.find((e) => e.name === "client_event");
  assert.deepEqual(
    { channel: wave.channel, event: wave.event, data: JSON.parse(wave.data), user_id: wave.user_id, socket_id: wave.socket_id },
    { channel: "presence-room", event: "client-wave", data: { hi: 1 }, user_id: "ann", socket_id: ann.connection.socket_id },
  );
  assert.equal(all.find((e) => e.name === "cache_miss").channel, "cache-nothing-yet");
  const forged = { ...received[0], rawBody: received[0].rawBody.replace("presence-room", "presence-other") };
  assert.equal(backend.webhook(forged).isValid(), false, "a changed body is refused");
});
