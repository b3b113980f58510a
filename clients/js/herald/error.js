// The client's one error type. Every module throws or reports it, and a page tells a refused token from a broken
// transport by its `code`, so it sits below every other module and imports none.

/** An error reported by Herald (`code` is the API's error code) or by the client itself. */
export class HeraldError extends Error {
  constructor(code, message, { status, retryAfter, closeCode, channel, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "HeraldError";
    this.code = code;
    if (status !== undefined) this.status = status;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
    if (closeCode !== undefined) this.closeCode = closeCode;
    if (channel !== undefined) this.channel = channel;
  }
}
