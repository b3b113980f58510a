// Webhooks as their receivers check them: Pusher's format validated by the official `pusher` Node SDK's
// `webhook()`, and Herald's signature by the verification functions docs/WEBHOOKS.md gives for Node and Python, run
// as they are written there. A real `herald serve`, a real member (an SSE stream whose token names a user), real
// HTTP requests; no browser.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import path from "node:path";
import Pusher from "pusher";
import { REPO, freePort, sleep, startServe } from "./harness.mjs";

const JWT_SECRET = "the-e2e-webhooks-secret-of-32-bytes!";
const HERALD_SECRET = "whsec-e2e-0123456789abcdef";
const PUSHER = { appId: "1", key: "app-key", secret: "app-secret", cluster: "mt1" };

/** The code block under `#### <language>` in docs/WEBHOOKS.md. */
function documented(language, fence) {
  const doc = readFileSync(path.join(REPO, "docs", "WEBHOOKS.md"), "utf8");
  const opening = `#### ${language}\n\n\`\`\`${fence}\n`;
  const start = doc.indexOf(opening);
  assert.ok(start >= 0, `docs/WEBHOOKS.md has a ${language} snippet`);
  const code = doc.slice(start + opening.length);
  return code.slice(0, code.indexOf("\n```"));
}

/** The documented Node function. */
const verifyHeraldWebhook = new Function("require", `${documented("Node", "js")}\nreturn verifyHeraldWebhook;`)(
  createRequire(import.meta.url),
);

/** The documented Python function, run by python3 on `body` and `header`. */
function verifiedByPython(body, header, secret = HERALD_SECRET) {
  const program = `${documented("Python", "python")}\nimport os, sys\nprint(verify_herald_webhook(sys.stdin.buffer.read(), os.environ["SIG"], os.environ["SECRET"]))\n`;
  const out = execFileSync("python3", ["-c", program], { input: body, env: { ...process.env, SIG: header, SECRET: secret } });
  return out.toString().trim() === "True";
}

function jwt(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${crypto.createHmac("sha256", JWT_SECRET).update(signed).digest("base64url")}`;
}

let receiver;
let server;
const requests = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      requests.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200).end();
    });
  });
  const receiverPort = await new Promise((resolve) => receiver.listen(0, "127.0.0.1", () => resolve(receiver.address().port)));
  const url = `http://127.0.0.1:${receiverPort}`;
  server = await startServe(
    await freePort(),
    `presence_grace_ms = 0
[jwt]
secret = "${JWT_SECRET}"
[namespaces.presence-room]
presence = true
public = true
[[webhooks]]
name = "pusher-app"
url = "${url}/pusher"
format = "pusher"
key = "${PUSHER.key}"
secret = "${PUSHER.secret}"
[[webhooks]]
name = "backend"
url = "${url}/herald"
secret = "${HERALD_SECRET}"
`,
  );
});

after(async () => {
  await server?.stop();
  await new Promise((resolve) => receiver?.close(resolve) ?? resolve());
});

/** The events received on `path` so far, in order. */
function events(path) {
  return requests.filter((r) => r.path === path).flatMap((r) => JSON.parse(r.body).events);
}

async function until(what, check) {
  const deadline = Date.now() + 20000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`never ${what}; received ${JSON.stringify(requests.map((r) => r.path))}`);
    await sleep(50);
  }
}

test("a member's lifecycle reaches a Pusher receiver, valid for the official SDK, and a Herald one, signed", { timeout: 60000 }, async () => {
  const token = jwt({ sub: "ada", exp: Math.floor(Date.now() / 1000) + 600, info: { name: "Ada" } });
  const stream = new AbortController();
  const opened = await fetch(`${server.url}/v1/sse?channel=presence-room:1&token=${token}`, { signal: stream.signal });
  assert.equal(opened.status, 200);
  await until("ada's join", () => events("/pusher").some((e) => e.name === "member_added"));
  stream.abort();
  await until("ada's leave and the channel vacated", () => events("/herald").some((e) => e.name === "channel_vacated"));
  await until("the same on the Pusher side", () => events("/pusher").some((e) => e.name === "channel_vacated"));

  const pusher = new Pusher(PUSHER);
  for (const request of requests.filter((r) => r.path === "/pusher")) {
    const webhook = pusher.webhook({ headers: request.headers, rawBody: request.body.toString() });
    assert.ok(webhook.isValid(), "the official SDK accepts Herald's Pusher webhook");
    assert.ok(webhook.getTime() instanceof Date);
    const tampered = pusher.webhook({ headers: request.headers, rawBody: request.body.toString().replace("room", "rooM") });
    assert.equal(tampered.isValid(), false, "and refuses a tampered one");
    const otherApp = new Pusher({ ...PUSHER, secret: "another-secret" });
    assert.equal(otherApp.webhook({ headers: request.headers, rawBody: request.body.toString() }).isValid(), false);
  }
  assert.deepEqual(
    events("/pusher").map((e) => [e.name, e.channel, e.user_id]),
    [
      ["channel_occupied", "presence-room:1", undefined],
      ["member_added", "presence-room:1", "ada"],
      ["member_removed", "presence-room:1", "ada"],
      ["channel_vacated", "presence-room:1", undefined],
    ],
  );

  const herald = requests.filter((r) => r.path === "/herald");
  for (const request of herald) {
    const signature = request.headers["herald-webhook-signature"];
    assert.ok(verifyHeraldWebhook(request.body, signature, HERALD_SECRET), "the documented Node function accepts it");
    assert.ok(verifiedByPython(request.body, signature), "so does the documented Python one");
    const tampered = Buffer.from(request.body.toString().replace("room", "rooM"));
    assert.equal(verifyHeraldWebhook(tampered, signature, HERALD_SECRET), false);
    assert.equal(verifiedByPython(tampered, signature), false);
    assert.equal(verifyHeraldWebhook(request.body, signature, "not-the-secret-at-all"), false);
    const stale = signature.replace(/t=(\d+)/, (_, t) => `t=${Number(t) - 3600}`);
    assert.equal(verifyHeraldWebhook(request.body, stale, HERALD_SECRET), false, "an old t is refused");
  }
  const ours = events("/herald");
  assert.deepEqual(
    ours.map((e) => e.name),
    ["channel_occupied", "member_added", "member_removed", "channel_vacated"],
  );
  assert.deepEqual(ours[1].user_info, { name: "Ada" });
  assert.equal(new Set(ours.map((e) => e.id)).size, 4, "an id per event");
  assert.equal(await server.metric('herald_webhook_events_sent_total{endpoint="backend"}'), 4);
});
