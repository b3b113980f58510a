// What the Pusher compatibility tests share: Herald started with an app (one node, or several on Redis), the
// official clients pointed at it (pusher-js, the `pusher` Node SDK, Laravel Echo, the Python SDK), and bounded
// waits. Nothing here speaks the protocol itself: the clients do, unmodified.

import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Pusher from "pusher-js";
import PusherServer from "pusher";
import { freePort, startServe } from "../../e2e/herald-process.mjs";

export { freePort, sleep } from "../../e2e/herald-process.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const APP = { id: "1", key: "app-key", secret: "app-secret-0123456789" };
/** A 32-byte key, base64: the master key of encrypted channels, known to the backend only. */
export const ENCRYPTION_KEY = Buffer.alloc(32, 7).toString("base64");
/** How long a test waits for something that should happen at once. */
export const PATIENCE = 10000;

/** The TOML of `[[pusher.apps]]` for `app`, with `limits` (a TOML table body) and `webhooks` (URLs) when given. */
function appToml(app, limits, webhooks = []) {
  let table = `[[pusher.apps]]\nid = "${app.id}"\nkey = "${app.key}"\nsecret = "${app.secret}"\n`;
  if (limits) table += `[pusher.apps.limits]\n${limits}\n`;
  for (const url of webhooks) table += `[[pusher.apps.webhooks]]\nurl = "${url}"\n`;
  return table;
}

/**
 * Starts `herald serve` with the test app. `redis` (a URL) and `prefix` put it on the Redis engine, so several
 * nodes started with the same prefix are one cluster; `config` is more TOML; `webhooks` the app's webhook URLs.
 */
export async function startHerald({ redis, prefix, config = "", limits, webhooks } = {}) {
  const engine = redis ? `engine = "redis"\nredis_url = "${redis}"\nredis_prefix = "${prefix}"\n` : "";
  const port = await freePort();
  const server = await startServe(port, `${engine}${config}\n${appToml(APP, limits, webhooks)}`);
  return { ...server, host: "127.0.0.1" };
}

/** A Redis key prefix of this run's own. */
export function uniquePrefix(name) {
  return `herald-pusher-test:${process.pid}:${name}:${Date.now()}:`;
}

/** The Node server SDK pointed at `server` (with another `secret` to sign wrongly). */
export function sdk(server, { secret = APP.secret } = {}) {
  return new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret,
    host: server.host,
    port: String(server.port),
    useTLS: false,
    encryptionMasterKeyBase64: ENCRYPTION_KEY,
  });
}

/**
 * pusher-js pointed at `server` over WebSocket only. Channel authorizations and sign-ins are signed by the Node
 * SDK, as an app's backend would sign them at its auth endpoint; `user` is the presence member and signed-in user.
 */
export function client(server, { user = { id: "u1", info: { name: "Ann" } }, options = {} } = {}) {
  const backend = sdk(server);
  // pusher-js's Node build decrypts private-encrypted- channels itself (it bundles tweetnacl).
  return new Pusher(APP.key, {
    wsHost: server.host,
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    cluster: "",
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith("presence-") ? { user_id: user.id, user_info: user.info } : undefined;
        callback(null, backend.authorizeChannel(socketId, channelName, presence));
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => callback(null, backend.authenticateUser(socketId, { id: user.id })),
    },
    ...options,
  });
}

/** Resolves once `pusher` is connected. */
export function connected(pusher) {
  return within(
    new Promise((resolve) => {
      if (pusher.connection.state === "connected") return resolve();
      pusher.connection.bind("connected", () => resolve());
    }),
    "connected",
  );
}

/** Resolves with the data of the next `event` on `channel` (a pusher-js or Echo channel with `bind`). */
export function next(channel, event) {
  return within(
    new Promise((resolve) => {
      const handler = (data, metadata) => {
        channel.unbind(event, handler);
        resolve({ data, metadata });
      };
      channel.bind(event, handler);
    }),
    `${event} on ${channel.name}`,
  );
}

/** Subscribes `pusher` to `name` and resolves with the channel once the subscription succeeded. */
export async function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  await next(channel, "pusher:subscription_succeeded");
  return channel;
}

/** `promise`, or a failure naming `what` after PATIENCE. */
export function within(promise, what, ms = PATIENCE) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Collects every `event` on `channel` into an array. */
export function collect(channel, event) {
  const seen = [];
  channel.bind(event, (data, metadata) => seen.push({ data, metadata }));
  return seen;
}

/** Resolves once `check()` holds, polling every 20 ms, or fails naming `what`. */
export async function until(check, what, ms = PATIENCE) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} never held within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Runs the Python `pusher` SDK (from the virtual environment scripts/pusher-compat.sh made) against `server`:
 * `request` is a JSON command for sdk.py; resolves with its JSON answer.
 */
export function python(server, request, { secret = APP.secret } = {}) {
  const interpreter = process.env.PUSHER_COMPAT_PYTHON ?? path.join(HERE, ".venv", "bin", "python");
  const args = [path.join(HERE, "sdk.py")];
  const input = JSON.stringify({ app: { ...APP, secret }, host: server.host, port: server.port, ...request });
  return new Promise((resolve, reject) => {
    const child = execFile(interpreter, args, { timeout: PATIENCE }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`sdk.py failed: ${error.message}\n${stderr}`));
      resolve(JSON.parse(stdout));
    });
    child.stdin.end(input);
  });
}
