// How the client speaks HTTP and JSON to the server: its URLs, requests bounded by a timeout, and the HeraldError
// an error answer becomes. Shared by the transports and by HTTP publishing, so every request is bounded and
// every refusal reads the same way.

import { HeraldError } from "./error.js";

/** `base` + `path`, for a base with or without a trailing slash or a path prefix. */
export function endpoint(baseUrl, path) {
  return baseUrl.replace(/\/+$/, "") + path;
}

/** A channel name as one path segment. */
export function channelPath(name) {
  // Every character of a channel name is safe in a path except `/` (API.md, "Channels").
  return name.replace(/\//g, "%2F");
}

/** The server's JSON text (a body, a frame, an event's data) parsed, or undefined when it is not JSON. */
export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The HeraldError of an error answer: the API's code and message when its body has them, and its `Retry-After`. */
async function errorFromResponse(res) {
  let code = `http_${res.status}`;
  let message = `HTTP ${res.status}`;
  const body = parseJson(await res.text().catch(() => ""));
  if (body && body.error) {
    code = body.error.code ?? code;
    message = body.error.message ?? message;
  }
  const retryAfter = Number(res.headers?.get?.("Retry-After"));
  return new HeraldError(code, message, {
    status: res.status,
    retryAfter: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
  });
}

/** A fetch bounded by `timeoutMs`, answering parsed JSON or throwing a HeraldError. */
export async function requestJson(env, url, init, timeoutMs, controller = new env.AbortController()) {
  const timer = env.setTimeout(() => controller.abort(), timeoutMs);
  try {
    const res = await env.fetch(url, { ...init, signal: controller.signal });
    if (!res.ok) throw await errorFromResponse(res);
    return await res.json();
  } finally {
    env.clearTimeout(timer);
  }
}

/** The headers of a request that carries the subscriber token, if there is one. */
export function withToken(headers, token) {
  return token ? { ...headers, Authorization: `Bearer ${token}` } : headers;
}

/**
 * Asks `url` once and drops the answer: null when the server accepts the request, the HeraldError it answered
 * otherwise. Used where the status of a refusal is hidden (an EventSource's `error` event has none) and to find
 * which channel of a request the server refused (its error does not name it).
 */
export async function checkAccess(env, url, init, timeoutMs) {
  const controller = new env.AbortController();
  const timer = env.setTimeout(() => controller.abort(), timeoutMs);
  try {
    const res = await env.fetch(url, { ...init, signal: controller.signal });
    if (!res.ok) return await errorFromResponse(res);
    return null;
  } finally {
    env.clearTimeout(timer);
    controller.abort(); // an accepted SSE request is a stream: end it
  }
}
