// How long to wait before trying again. One policy for every retry of the client (a reconnection, a token
// function that failed, a token renewal after a refusal), so a server that is down or refusing is asked less
// and less often, and a crowd of pages does not come back in step.

/** Exponential backoff with "equal jitter": between half and all of `base * 2^attempt`, capped at `max`. */
export function backoffDelay(attempt, base, max, random) {
  const ceiling = Math.min(max, base * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
