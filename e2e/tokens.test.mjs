// Subscriber tokens in a real browser, against a real `herald serve` that checks HS256 tokens: private channels
// over each of the four transports with a valid token; a missing, wrong or insufficient token reported to the
// page, without a fallback and without hammering the server; and 3-second tokens renewed through the page's token
// function while messages keep coming, with no message lost or shown twice.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { assertConsecutive, freePort, launchBrowser, sleep, startServe } from "./harness.mjs";

const SECRET = "the-e2e-shared-secret-of-at-least-32-bytes";
const BACKEND_KEY = "e2e-backend-key-0123456789";
const TRANSPORTS = ["websocket", "sse", "long-poll", "poll"];

// Namespaces are private by default once a token key is configured; `news` is public. A leeway of one second
// (the default is five) keeps a renewal that came too late from going unnoticed.
const CONFIG = `
[[publisher_keys]]
name = "backend"
key = "${BACKEND_KEY}"

[jwt]
secret = "${SECRET}"
leeway_secs = 1

[namespaces.news]
public = true
`;

/** A token as an application's backend issues it (docs/SECURITY.md, "Issuing a token from your backend"). */
function mint({ sub, channels = [], lifetime, secret = SECRET }) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const iat = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, channels, iat, exp: iat + lifetime })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

async function publish(server, channel, data) {
  const res = await fetch(`${server.url}/v1/channels/${channel}/messages`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${BACKEND_KEY}` },
    body: JSON.stringify({ data }),
  });
  assert.equal(res.status, 201, await res.text());
}

let browser;
const cleanups = [];

before(async () => {
  browser = await launchBrowser();
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
});

after(async () => {
  await browser?.close();
});

/**
 * A page of the server's origin where `startProbe(name, spec)` runs a Herald client and records, per channel,
 * the offsets delivered, plus its errors, states and how many tokens it asked for. The page's token function
 * calls `mintToken`, which stands for the application's backend.
 */
async function openProbePage(server) {
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.exposeFunction("mintToken", (request) => mint(request));
  await page.goto(`${server.url}/healthz`);
  await page.evaluate(async () => {
    const { Herald } = await import("/v1/herald.js");
    window.probes = {};
    window.startProbe = (name, { transports, token, tokenRequest, channels }) => {
      const record = { offsets: {}, errors: [], states: [], tokensIssued: 0 };
      const tokenOption = tokenRequest
        ? async () => {
            record.tokensIssued++;
            return window.mintToken(tokenRequest);
          }
        : (token ?? null);
      const herald = new Herald(location.origin, { transports, token: tokenOption, pollInterval: 300 });
      herald.on("error", (e) => record.errors.push(e.channel ? `${e.code}:${e.channel}` : e.code));
      herald.on("state", ({ state, transport }) => record.states.push(transport ? `${state}:${transport}` : state));
      for (const channel of channels) {
        record.offsets[channel] = [];
        herald.subscribe(channel, { last: 1 }, (_data, msg) => record.offsets[channel].push(msg.offset));
      }
      window.probes[name] = record;
    };
  });
  return { page, pageErrors };
}

function records(page) {
  return page.evaluate(() => structuredClone(window.probes));
}

/** Waits until each of `names` delivered at least `count` messages of each channel in `channels`. */
async function waitForOffsets(page, names, channels, count, timeout = 30000) {
  await page.waitForFunction(
    ({ names, channels, count }) =>
      names.every((n) => channels.every((c) => (window.probes[n]?.offsets[c]?.length ?? 0) >= count)),
    { names, channels, count },
    { timeout, polling: 100 },
  );
}

/** `transports` starting with `first`, so a client that fell back would show another transport in its states. */
function preferring(first) {
  return [first, ...TRANSPORTS.filter((t) => t !== first)];
}

test(
  "with a valid token, private channels deliver every message over each of the four transports",
  { timeout: 90000 },
  async () => {
    const server = await startServe(await freePort(), CONFIG);
    cleanups.push(() => server.stop());
    const channels = ["user:u42", "orders:42", "news:today"];
    for (const channel of channels) await publish(server, channel, { n: 1 });
    const { page, pageErrors } = await openProbePage(server);
    for (const transport of TRANSPORTS) {
      const tokenRequest = { sub: "u42", channels: ["orders:42"], lifetime: 600 };
      await page.evaluate(([t, r, c]) => window.startProbe(t, { transports: [t], tokenRequest: r, channels: c }), [
        transport,
        tokenRequest,
        channels,
      ]);
    }
    await waitForOffsets(page, TRANSPORTS, channels, 1);
    for (let n = 2; n <= 6; n++) {
      for (const channel of channels) await publish(server, channel, { n });
      await sleep(100);
    }
    await waitForOffsets(page, TRANSPORTS, channels, 6);
    const probes = await records(page);
    for (const transport of TRANSPORTS) {
      const probe = probes[transport];
      for (const channel of channels) {
        assert.deepEqual(probe.offsets[channel], [1, 2, 3, 4, 5, 6], `${transport} ${channel}`);
      }
      assert.deepEqual(probe.errors, [], transport);
      assert.equal(probe.tokensIssued, 1, transport);
    }
    assert.deepEqual(pageErrors, []);
  },
);

test(
  "a missing, wrong or insufficient token is reported to the page, without fallback or retries",
  { timeout: 90000 },
  async () => {
    const server = await startServe(await freePort(), CONFIG);
    cleanups.push(() => server.stop());
    for (const channel of ["news:today", "orders:42"]) await publish(server, channel, { n: 1 });
    const { page, pageErrors } = await openProbePage(server);
    const wrongToken = mint({ sub: "u42", lifetime: 600, secret: "another-secret-that-is-32-bytes-long!" });
    for (const transport of TRANSPORTS) {
      const transports = preferring(transport);
      await page.evaluate(
        ([t, transports, wrongToken]) => {
          window.startProbe(`none:${t}`, { transports, channels: ["news:today", "user:u42"] });
          window.startProbe(`wrong:${t}`, { transports, token: wrongToken, channels: ["user:u42"] });
          window.startProbe(`forbidden:${t}`, {
            transports,
            tokenRequest: { sub: "u42", channels: ["orders:42"], lifetime: 600 },
            channels: ["orders:43", "orders:42"],
          });
        },
        [transport, transports, wrongToken],
      );
    }
    const names = (kind) => TRANSPORTS.map((t) => `${kind}:${t}`);
    await waitForOffsets(page, names("none"), ["news:today"], 1);
    await waitForOffsets(page, names("forbidden"), ["orders:42"], 1);
    await page.waitForFunction(
      (names) => names.every((n) => window.probes[n].errors.length > 0 && window.probes[n].states.at(-1) === "idle"),
      names("wrong"),
      { timeout: 30000, polling: 100 },
    );
    // The public channel, and the granted one, go on beside the refused ones.
    await publish(server, "news:today", { n: 2 });
    await publish(server, "orders:42", { n: 2 });
    await waitForOffsets(page, names("none"), ["news:today"], 2);
    await waitForOffsets(page, names("forbidden"), ["orders:42"], 2);

    const refusals = async () =>
      (await server.metric('herald_refusals_total{reason="token_required"}')) +
      (await server.metric('herald_refusals_total{reason="invalid_token"}')) +
      (await server.metric('herald_refusals_total{reason="channel_forbidden"}'));
    const settled = await refusals();
    await sleep(4000);
    assert.equal(await refusals(), settled, "nothing retries a refusal that only a new token can fix");

    const probes = await records(page);
    for (const transport of TRANSPORTS) {
      const none = probes[`none:${transport}`];
      const wrong = probes[`wrong:${transport}`];
      const forbidden = probes[`forbidden:${transport}`];
      assert.deepEqual(none.errors, ["token_required:user:u42"], `none, ${transport}`);
      assert.deepEqual(none.offsets["user:u42"], []);
      assert.deepEqual(none.offsets["news:today"], [1, 2], `none, ${transport}`);
      assert.equal(wrong.errors[0], "invalid_token", `wrong, ${transport}: ${wrong.errors}`);
      assert.deepEqual(forbidden.errors, ["channel_forbidden:orders:43"], `forbidden, ${transport}`);
      assert.deepEqual(forbidden.offsets["orders:42"], [1, 2], `forbidden, ${transport}`);
      for (const probe of [none, wrong, forbidden]) {
        const others = probe.states.filter((s) => s.includes(":") && !s.endsWith(`:${transport}`));
        assert.deepEqual(others, [], `${transport} fell back: ${probe.states.join(" → ")}`);
      }
    }
    assert.deepEqual(pageErrors, []);
  },
);

test(
  "3-second tokens are renewed through the token function while messages flow, none lost or repeated",
  { timeout: 90000 },
  async () => {
    const server = await startServe(await freePort(), CONFIG);
    cleanups.push(() => server.stop());
    const channels = ["user:u42", "orders:42"];
    for (const channel of channels) await publish(server, channel, { n: 1 });
    const { page, pageErrors } = await openProbePage(server);
    for (const transport of TRANSPORTS) {
      const tokenRequest = { sub: "u42", channels: ["orders:42"], lifetime: 3 };
      await page.evaluate(([t, r, c]) => window.startProbe(t, { transports: [t], tokenRequest: r, channels: c }), [
        transport,
        tokenRequest,
        channels,
      ]);
    }
    await waitForOffsets(page, TRANSPORTS, channels, 1);
    // Ten seconds of messages: each token is renewed three times or more while they flow.
    let published = 1;
    const until = Date.now() + 10000;
    while (Date.now() < until) {
      published++;
      for (const channel of channels) await publish(server, channel, { n: published });
      await sleep(150);
    }
    await waitForOffsets(page, TRANSPORTS, channels, published);
    await sleep(500); // a repeat would arrive after the last message
    const probes = await records(page);
    for (const transport of TRANSPORTS) {
      const probe = probes[transport];
      for (const channel of channels) {
        const offsets = probe.offsets[channel];
        assertConsecutive(offsets, `${transport} ${channel}`);
        assert.deepEqual([offsets[0], offsets.length], [1, published], `${transport} ${channel}`);
      }
      assert.ok(probe.tokensIssued >= 4, `${transport} asked for ${probe.tokensIssued} tokens`);
      assert.deepEqual(probe.errors, [], transport);
    }
    assert.equal(await server.metric('herald_refusals_total{reason="token_expired"}'), 0);
    assert.deepEqual(pageErrors, []);
  },
);
