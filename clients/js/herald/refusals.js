// What the server's refusals mean to the client. A refused token or channel is a problem of credentials, not of
// the transport: it must never make the client fall back to another technique, so every transport sorts the
// errors it gets with these sets, and finds out which channel of a request was refused the same way.

import { checkAccess } from "./http.js";

/** The errors that refuse the token itself: every request carrying it fails, so only a new token helps. */
export const TOKEN_REFUSALS = new Set(["invalid_token", "token_expired"]);
/** The errors that refuse one channel of a request: the others may go on. */
export const CHANNEL_REFUSALS = new Set(["token_required", "channel_forbidden"]);

/**
 * A request for several channels was refused for one of them, but the error does not say which: asks for each
 * channel alone (`probeUrl(name)`), one request after the other. Returns `[channel, error]` for each refused one.
 */
export async function findRefusedChannels(link, names, error, probeUrl, init) {
  if (names.length === 1) return [[names[0], error]];
  const refused = [];
  for (const name of names) {
    if (!link.live()) break;
    const refusal = await checkAccess(link.env, probeUrl(name), init, link.opts.requestTimeout).catch(() => null);
    if (refusal && CHANNEL_REFUSALS.has(refusal.code)) refused.push([name, refusal]);
  }
  return refused;
}
