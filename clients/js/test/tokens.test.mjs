// Subscriber tokens: presented on every transport, renewed ahead of expiry through the page's function, and
// refusals told apart from broken transports: no fallback, no hammering, one error event each, and a refused
// channel leaves the others alone.
import test from "node:test";
import assert from "node:assert/strict";
import { Herald, readTokenClaims, tokenRenewalDelay } from "../herald.js";
import { envelope, flush, jwt, query, setup } from "../testing/fakes.mjs";

/** A token function that hands out JWTs valid for `lifetime` seconds from the fake clock's now, and counts calls. */
function issuer(clock, lifetime, claims = {}) {
  const issued = [];
  const token = async () => {
    const iat = Math.floor(clock.now / 1000);
    const t = jwt({ sub: "u42", iat, exp: iat + lifetime, n: issued.length + 1, ...claims });
    issued.push(t);
    return t;
  };
  return { token, issued };
}

const refusal = (code, message = code) => ({ error: { code, message } });

function bearer(request) {
  return request.init.headers?.Authorization ?? null;
}

test("a token is renewed 30 s before exp, or a tenth of its lifetime when that is closer to exp", () => {
  const at = (seconds) => seconds * 1000;
  assert.equal(tokenRenewalDelay(jwt({ iat: 1000, exp: 1900 }), at(1000)), 870000, "15 min: 30 s ahead");
  assert.equal(tokenRenewalDelay(jwt({ iat: 1000, exp: 1003 }), at(1000)), 2700, "3 s: 0.3 s ahead");
  assert.equal(tokenRenewalDelay(jwt({ exp: 1060 }), at(1000)), 54000, "no iat: what is left is the lifetime");
  assert.equal(tokenRenewalDelay(jwt({ iat: 1000, exp: 1060 }), at(900)), 54000, "a page clock behind the issuer's");
  assert.equal(tokenRenewalDelay(jwt({ iat: 1000, exp: 1060 }), at(2000)), 0, "already expired");
  assert.equal(tokenRenewalDelay("opaque-token", at(1000)), null, "not a JWT");
  assert.equal(tokenRenewalDelay(jwt({ sub: "u42" }), at(1000)), null, "no exp");
});

test("claims are read from the base64url payload, as UTF-8, without checking the signature", () => {
  assert.deepEqual(readTokenClaims(jwt({ sub: "Ünal/?>", exp: 5 })), { sub: "Ünal/?>", exp: 5 });
  assert.equal(readTokenClaims("a.%%%.c"), null);
  assert.equal(readTokenClaims("a.W10.c"), null, "an array is not a claims set");
  assert.equal(readTokenClaims(""), null);
});

test("over a WebSocket the token is the first frame, before any subscription", async () => {
  const { herald, net } = setup(Herald, { transports: ["websocket"], token: "T1" });
  herald.subscribe("user:u42", {}, () => {});
  herald.subscribe("dashboard", { last: 1 }, () => {});
  await flush();
  assert.equal(net.sockets[0].url, "ws://herald.test/v1/ws", "never in the URL");
  net.sockets[0].accept();
  assert.deepEqual(net.sockets[0].sent, [
    { op: "auth", token: "T1", id: 1 },
    { op: "subscribe", channel: "user:u42", id: 2 },
    { op: "subscribe", channel: "dashboard", last: 1, id: 3 },
  ]);
});

test("over SSE the token is in the query; over polling, and in the SSE position poll, in Authorization", async () => {
  const sse = setup(Herald, { transports: ["sse"], token: "T1" });
  sse.herald.subscribe("user:u42", {}, () => {});
  await flush();
  assert.deepEqual(query(sse.net.sources[0].url).at(-1), ["token", "T1"]);
  sse.net.sources[0].accept();
  await flush();
  assert.equal(bearer(sse.net.requests[0]), "Bearer T1");

  for (const kind of ["long-poll", "poll"]) {
    const { herald, net } = setup(Herald, { transports: [kind], token: "T1" });
    herald.subscribe("user:u42", {}, () => {});
    await flush();
    assert.equal(bearer(net.requests[0]), "Bearer T1", kind);
    assert.ok(!net.requests[0].url.includes("T1"), kind);
  }
});

test("without a token nothing is sent: no auth frame, no token parameter, no Authorization", async () => {
  const ws = setup(Herald, { transports: ["websocket"] });
  ws.herald.subscribe("dashboard", {}, () => {});
  await flush();
  ws.net.sockets[0].accept();
  assert.deepEqual(
    ws.net.sockets[0].sent.map((f) => f.op),
    ["subscribe"],
  );
  const sse = setup(Herald, { transports: ["sse"] });
  sse.herald.subscribe("dashboard", {}, () => {});
  await flush();
  assert.ok(!query(sse.net.sources[0].url).some(([key]) => key === "token"));
  const poll = setup(Herald, { transports: ["poll"] });
  poll.herald.subscribe("dashboard", {}, () => {});
  await flush();
  assert.equal(bearer(poll.net.requests[0]), null);
});

test("an HTTP publish does not carry the subscriber token: the server takes only publisher keys there", async () => {
  const { herald, net } = setup(Herald, { transports: ["sse"], token: "T1" });
  herald.publish("chat:lobby", "chat", { text: "hi" });
  await flush();
  assert.equal(bearer(net.requests[0]), null);
});

test("a token function is called before the first connection, which waits for it", async () => {
  let resolve;
  let calls = 0;
  const { herald, net } = setup(Herald, {
    transports: ["websocket"],
    token: () => {
      calls++;
      return new Promise((r) => (resolve = r));
    },
  });
  herald.subscribe("user:u42", {}, () => {});
  herald.subscribe("orders:42", {}, () => {});
  await flush();
  assert.equal(calls, 1);
  assert.equal(net.sockets.length, 0);
  resolve("T1");
  await flush();
  net.sockets[0].accept();
  assert.deepEqual(net.sockets[0].sent[0], { op: "auth", token: "T1", id: 1 });
});

test("over a WebSocket a token is renewed ahead of exp with an auth frame on the same connection", async () => {
  const { herald, clock, net, errors } = setup(Herald, { transports: ["websocket"] });
  const { token, issued } = issuer(clock, 60);
  herald.setToken(token);
  const seen = [];
  herald.subscribe("user:u42", {}, (_d, msg) => seen.push(msg.offset));
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "authenticated", sub: "u42", exp: 60, id: 1 });
  ws.frame({ op: "subscribed", channel: "user:u42", cursor: "user:u42-0", reset: false, id: 2 });
  ws.frame({ op: "message", ...envelope("user:u42", 1) });
  assert.deepEqual(clock.pendingDelays(), [54000], "60 s token: renewed 6 s ahead");
  await clock.advance(54000);
  assert.equal(issued.length, 2);
  assert.deepEqual(ws.sent.slice(2), [{ op: "auth", token: issued[1], id: 3 }], "no resubscription");
  ws.frame({ op: "authenticated", sub: "u42", exp: 114, id: 3 });
  ws.frame({ op: "message", ...envelope("user:u42", 2) });
  assert.equal(net.sockets.length, 1);
  assert.deepEqual(seen, [1, 2]);
  assert.deepEqual(errors, []);
  assert.deepEqual(clock.pendingDelays(), [54000], "and the next renewal is planned");
});

test("over SSE a renewed token opens a new stream from the cursors, losing and repeating nothing", async () => {
  const { herald, clock, net, errors } = setup(Herald, { transports: ["sse"] });
  const { token, issued } = issuer(clock, 20);
  herald.setToken(token);
  const seen = [];
  herald.subscribe("user:u42", {}, (_d, msg) => seen.push(msg.offset));
  await flush();
  const first = net.sources[0];
  first.accept();
  net.requests[0].respond(200, { messages: [], cursor: "P0", reset: false });
  first.message(envelope("user:u42", 3), "S3");
  await clock.advance(18000);
  assert.equal(issued.length, 2);
  assert.ok(first.closed);
  const second = net.sources[1];
  assert.deepEqual(query(second.url), [
    ["channel", "user:u42"],
    ["envelope", "true"],
    ["since", "user:u42-3"],
    ["token", issued[1]],
  ]);
  second.accept();
  second.message(envelope("user:u42", 3), "S3");
  second.message(envelope("user:u42", 4), "S4");
  assert.deepEqual(seen, [3, 4]);
  assert.deepEqual(errors, []);
});

test("over long polling a renewed token is sent from the next request on", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["long-poll"] });
  const { token, issued } = issuer(clock, 20);
  herald.setToken(token);
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  net.requests[0].respond(200, { messages: [], cursor: "P0", reset: false });
  await flush();
  assert.equal(bearer(net.requests[1]), `Bearer ${issued[0]}`);
  await clock.advance(18000);
  assert.ok(net.requests[1].aborted, "the held poll is asked again with the new token");
  assert.equal(bearer(net.requests.at(-1)), `Bearer ${issued[1]}`);
  assert.deepEqual(query(net.requests.at(-1).url)[1], ["since", "P0"]);
});

test("a held long poll ended by token_expired asks for a fresh token and polls again from the same cursor", async () => {
  const tokens = ["T1", "T2"];
  const { herald, clock, net, states } = setup(Herald, { transports: ["long-poll", "poll"], token: () => tokens.shift() });
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  net.requests[0].respond(200, { messages: [], cursor: "P0", reset: false });
  await flush();
  // The server holds a poll no longer than its token, then says so (API.md, "Long polling").
  net.requests[1].respond(401, refusal("token_expired"));
  await flush();
  await clock.advance(Math.max(0, ...clock.pendingDelays()));
  assert.equal(bearer(net.requests.at(-1)), "Bearer T2");
  assert.deepEqual(query(net.requests.at(-1).url)[1], ["since", "P0"]);
  assert.ok(states.every((s) => s.endsWith(":long-poll")), "a refused token is not a failed transport");
});

test("a WebSocket subscription ended by token_expired waits for a fresh token, then resumes from its cursor", async () => {
  const { herald, clock, net, errors } = setup(Herald, { transports: ["websocket"] });
  const { token, issued } = issuer(clock, 3600);
  herald.setToken(token);
  const seen = [];
  herald.subscribe("user:u42", {}, (_d, msg) => seen.push(msg.offset));
  herald.subscribe("dashboard", {}, (_d, msg) => seen.push(`d${msg.offset}`));
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "authenticated", sub: "u42", exp: 3600, id: 1 });
  ws.frame({ op: "subscribed", channel: "user:u42", cursor: "user:u42-0", reset: false, id: 2 });
  ws.frame({ op: "message", ...envelope("user:u42", 1) });
  // The renewal was late (the page slept): the server ends the private subscription.
  ws.frame({ op: "ended", channel: "user:u42", code: "token_expired", message: "expired" });
  ws.frame({ op: "message", ...envelope("dashboard", 9) });
  assert.deepEqual(errors, ["token_expired:user:u42"]);
  assert.deepEqual(clock.pendingDelays(), [1000], "a fresh token after the backoff");
  await clock.advance(1000);
  assert.equal(issued.length, 2);
  assert.deepEqual(ws.sent.slice(3), [
    { op: "auth", token: issued[1], id: 4 },
    { op: "subscribe", channel: "user:u42", since: "user:u42-1", id: 5 },
  ]);
  ws.frame({ op: "message", ...envelope("user:u42", 2) });
  assert.equal(net.sockets.length, 1);
  assert.deepEqual(seen, [1, "d9", 2]);
});

test("a subscription ended while a new auth frame is in flight is resubscribed at once, without an error", async () => {
  const { herald, clock, net, errors } = setup(Herald, { transports: ["websocket"] });
  const { token, issued } = issuer(clock, 60);
  herald.setToken(token);
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "authenticated", sub: "u42", exp: 60, id: 1 });
  ws.frame({ op: "subscribed", channel: "user:u42", cursor: "user:u42-4", reset: false, id: 2 });
  await clock.advance(54000);
  ws.frame({ op: "ended", channel: "user:u42", code: "token_expired", message: "expired" });
  assert.deepEqual(ws.sent.slice(2), [
    { op: "auth", token: issued[1], id: 3 },
    { op: "subscribe", channel: "user:u42", since: "user:u42-4", id: 4 },
  ]);
  assert.deepEqual(errors, []);
});

test("a channel the token does not grant fails alone, with an error; the others and the connection go on", async () => {
  const { herald, clock, net, errors, states } = setup(Herald, { transports: ["websocket", "sse"], token: "T1" });
  const seen = [];
  herald.subscribe("orders:43", {}, (_d, msg) => seen.push(msg.channel));
  herald.subscribe("orders:42", {}, (_d, msg) => seen.push(msg.channel));
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "authenticated", sub: "u42", exp: 3600, id: 1 });
  ws.frame({ op: "error", id: 2, code: "channel_forbidden", message: "the token does not grant orders:43" });
  ws.frame({ op: "subscribed", channel: "orders:42", cursor: "orders:42-0", reset: false, id: 3 });
  ws.frame({ op: "message", ...envelope("orders:42", 1) });
  assert.deepEqual(errors, ["channel_forbidden:orders:43"]);
  assert.deepEqual(seen, ["orders:42"]);
  assert.deepEqual(clock.pendingDelays(), []);
  assert.equal(net.sockets.length, 1);
  assert.deepEqual(states, ["connecting:websocket", "connected:websocket"]);
});

test("a refused auth frame with a string token: private channels wait for setToken, public ones go on", async () => {
  const { herald, clock, net, errors } = setup(Herald, { transports: ["websocket"], token: "bad" });
  const seen = [];
  herald.subscribe("user:u42", {}, (_d, msg) => seen.push(msg.channel));
  herald.subscribe("dashboard", {}, (_d, msg) => seen.push(msg.channel));
  await flush();
  const ws = net.sockets[0];
  ws.accept();
  ws.frame({ op: "error", id: 1, code: "invalid_token", message: "bad signature" });
  ws.frame({ op: "error", id: 2, code: "token_required", message: "user:u42 is private" });
  ws.frame({ op: "subscribed", channel: "dashboard", cursor: "dashboard-0", reset: false, id: 3 });
  ws.frame({ op: "message", ...envelope("dashboard", 1) });
  assert.deepEqual(errors, ["invalid_token", "token_required:user:u42"]);
  assert.deepEqual(clock.pendingDelays(), [], "a string cannot be renewed: nothing is retried");
  herald.setToken("good");
  await flush();
  assert.deepEqual(ws.sent.slice(3), [
    { op: "auth", token: "good", id: 4 },
    { op: "subscribe", channel: "user:u42", id: 5 },
  ]);
  ws.frame({ op: "authenticated", sub: "u42", exp: 3600, id: 4 });
  ws.frame({ op: "subscribed", channel: "user:u42", cursor: "user:u42-0", reset: false, id: 5 });
  ws.frame({ op: "message", ...envelope("user:u42", 1) });
  assert.deepEqual(seen, ["dashboard", "user:u42"]);
  assert.equal(net.sockets.length, 1);
});

test("an SSE stream refused for its token is diagnosed, and retried with a fresh token without falling back", async () => {
  const tokens = ["T1", "T2"];
  const { herald, clock, net, errors, states } = setup(Herald, {
    transports: ["sse", "long-poll"],
    token: () => tokens.shift(),
  });
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  const first = net.sources[0];
  first.fail();
  await flush();
  const diagnosis = net.requests[0];
  assert.equal(diagnosis.url, first.url);
  diagnosis.respond(401, refusal("token_expired"));
  await flush();
  assert.deepEqual(errors, ["token_expired"]);
  assert.deepEqual(clock.pendingDelays(), [1000]);
  await clock.advance(1000);
  assert.deepEqual(query(net.sources[1].url).at(-1), ["token", "T2"]);
  net.sources[1].accept();
  assert.deepEqual(states, ["connecting:sse", "connected:sse"]);
});

test("a string token refused over SSE stops the client until setToken; no retry, no fallback", async () => {
  const { herald, clock, net, errors, states } = setup(Herald, { transports: ["sse", "long-poll"], token: "old" });
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  net.sources[0].fail();
  await flush();
  net.requests[0].respond(401, refusal("invalid_token"));
  await flush();
  assert.deepEqual(errors, ["invalid_token"]);
  assert.deepEqual(clock.pendingDelays(), []);
  await clock.advance(60000);
  assert.equal(net.sources.length, 1);
  assert.equal(net.requests.length, 1);
  assert.deepEqual(states, ["connecting:sse", "idle"]);
  herald.setToken("new");
  await flush();
  assert.deepEqual(query(net.sources[1].url).at(-1), ["token", "new"]);
});

test("a function that keeps giving refused tokens is asked again with a growing backoff, on the same transport", async () => {
  let calls = 0;
  const { herald, clock, net, states } = setup(Herald, {
    transports: ["long-poll", "poll"],
    token: () => `T${++calls}`,
  });
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  const delays = [];
  for (let i = 0; i < 4; i++) {
    net.requests.at(-1).respond(401, refusal("invalid_token"));
    await flush();
    delays.push(...clock.pendingDelays());
    await clock.advance(delays.at(-1));
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000]);
  assert.equal(calls, 5);
  assert.equal(bearer(net.requests.at(-1)), "Bearer T5");
  assert.ok(states.every((s) => s === "connecting:long-poll"));
});

test("a poll refused for one of its channels finds which, fails that one and goes on with the others", async () => {
  const { herald, net, errors } = setup(Herald, { transports: ["long-poll"], token: "T1" });
  const seen = [];
  herald.subscribe("orders:42", {}, (_d, msg) => seen.push(msg.channel));
  herald.subscribe("orders:43", {}, (_d, msg) => seen.push(msg.channel));
  await flush();
  net.requests[0].respond(403, refusal("channel_forbidden"));
  await flush();
  const probes = [net.requests[1]];
  assert.deepEqual(query(probes[0].url)[0], ["channel", "orders:42"]);
  assert.equal(bearer(probes[0]), "Bearer T1");
  probes[0].respond(200, { messages: [], cursor: "P", reset: false });
  await flush();
  probes.push(net.requests[2]);
  assert.deepEqual(query(probes[1].url)[0], ["channel", "orders:43"]);
  probes[1].respond(403, refusal("channel_forbidden"));
  await flush();
  assert.deepEqual(errors, ["channel_forbidden:orders:43"]);
  const next = net.requests[3];
  assert.deepEqual(
    query(next.url).filter(([k]) => k === "channel"),
    [["channel", "orders:42"]],
  );
  next.respond(200, { messages: [envelope("orders:42", 1)], cursor: "P1", reset: false });
  await flush();
  assert.deepEqual(seen, ["orders:42"]);
});

test("a stream of one forbidden channel fails that subscription without another request; nothing retries", async () => {
  const { herald, clock, net, errors, states } = setup(Herald, { transports: ["sse", "long-poll"], token: "T1" });
  herald.subscribe("orders:43", {}, () => {});
  await flush();
  net.sources[0].fail();
  await flush();
  net.requests[0].respond(403, refusal("channel_forbidden"));
  await flush();
  assert.deepEqual(errors, ["channel_forbidden:orders:43"]);
  assert.equal(net.requests.length, 1);
  assert.deepEqual(clock.pendingDelays(), []);
  assert.deepEqual(states, ["connecting:sse", "idle"]);
});

test("a private channel subscribed without a token waits for one while the public ones are served", async () => {
  const { herald, net, errors, states } = setup(Herald, { transports: ["poll"] });
  herald.subscribe("dashboard", {}, () => {});
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  net.requests[0].respond(401, refusal("token_required"));
  await flush();
  net.requests[1].respond(200, { messages: [], cursor: "P", reset: false });
  await flush();
  net.requests[2].respond(401, refusal("token_required"));
  await flush();
  assert.deepEqual(errors, ["token_required:user:u42"]);
  assert.deepEqual(query(net.requests[3].url)[0], ["channel", "dashboard"]);
  net.requests[3].respond(200, { messages: [], cursor: "PD", reset: false });
  await flush();
  assert.deepEqual(states, ["connecting:poll", "connected:poll"]);
  herald.setToken("T1");
  await flush();
  const resumed = net.requests.at(-1);
  assert.deepEqual(
    query(resumed.url).filter(([k]) => k === "channel"),
    [
      ["channel", "dashboard"],
      ["channel", "user:u42"],
    ],
  );
  assert.equal(bearer(resumed), "Bearer T1");
});

test("an SSE stream ended by herald.error token_expired resumes from its cursor with a fresh token", async () => {
  const tokens = ["T1", "T2"];
  const { herald, clock, net, errors, states } = setup(Herald, { transports: ["sse", "long-poll"] });
  herald.setToken(() => tokens.shift());
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  net.sources[0].accept();
  net.sources[0].message(envelope("user:u42", 5), "S5");
  net.sources[0].named("herald.error", { code: "token_expired", message: "the token expired" });
  assert.ok(net.sources[0].closed);
  assert.deepEqual(errors, ["token_expired"]);
  await clock.advance(1000);
  assert.deepEqual(query(net.sources[1].url).slice(2), [
    ["since", "user:u42-5"],
    ["token", "T2"],
  ]);
  assert.deepEqual(states, ["connecting:sse", "connected:sse", "reconnecting:sse"]);
});

test("a token function that fails, or never answers, is reported and tried again after the backoff", async () => {
  const answers = [() => Promise.reject(new Error("backend down")), () => new Promise(() => {}), () => "T1"];
  const { herald, clock, net, errors } = setup(Herald, {
    transports: ["websocket", "sse"],
    token: () => answers.shift()(),
  });
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  assert.deepEqual(errors, ["token_unavailable"]);
  await clock.advance(1000);
  assert.deepEqual(clock.pendingDelays(), [10000], "requestTimeout bounds the call");
  await clock.advance(10000);
  assert.deepEqual(errors, ["token_unavailable", "token_unavailable"]);
  await clock.advance(2000);
  assert.equal(net.sources.length, 0, "not a transport failure");
  net.sockets[0].accept();
  assert.deepEqual(net.sockets[0].sent[0], { op: "auth", token: "T1", id: 1 });
});

test("a token already due when it arrives is renewed after a growing backoff, not at once", async () => {
  const { herald, clock, net } = setup(Herald, { transports: ["websocket"] });
  await clock.advance(5000);
  let calls = 0;
  herald.setToken(() => {
    calls++;
    return jwt({ iat: 0, exp: 1 }); // a cached token, handed out again and again
  });
  herald.subscribe("user:u42", {}, () => {});
  await flush();
  net.sockets[0].accept();
  assert.deepEqual([calls, clock.pendingDelays()], [1, [1000]]);
  await clock.advance(1000);
  assert.deepEqual([calls, clock.pendingDelays()], [2, [2000]]);
  assert.deepEqual(
    net.sockets[0].sent.map((f) => f.op),
    ["auth", "subscribe", "auth"],
  );
});
