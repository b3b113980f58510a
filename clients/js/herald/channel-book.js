// The client's record of its channels, and the only place their cursors live. Transports read it and report to
// it, but none owns a position: that is how a switch from one transport to another, or a reconnect, resumes each
// channel where the page was, and how a message that two connections both carried is shown once.

/**
 * What the client knows of each subscribed channel: who listens, where the page is in it, and the last offset it
 * delivered (the safety net against a message shown twice).
 *
 * A channel's own cursor comes from the last envelope delivered (or a WebSocket `subscribed`). Before its first
 * message a channel may still have a *stream cursor*: the multi-channel cursor of a poll answer or an SSE event,
 * which names it at the position the stream had reached. Resuming passes stream cursors first and own cursors
 * last, because for a channel named twice the last `since` wins (API.md, "Cursors").
 *
 * A channel the server refused for want of a valid token is *parked*: it keeps its subscribers and its cursor, but
 * no connection asks for it until a new token comes, when it resumes from that cursor.
 */
export class ChannelBook {
  #channels = new Map();
  #streamCursorSeq = 0;

  /** How many channels are subscribed, parked or not. */
  get size() {
    return this.#channels.size;
  }

  /** How many channels a connection must carry: the subscribed ones that are not parked. */
  get activeSize() {
    let size = 0;
    for (const channel of this.#channels.values()) if (!channel.parked) size++;
    return size;
  }

  /** The channels a connection must carry, in the order they were subscribed. */
  names() {
    return [...this.#channels].filter(([, channel]) => !channel.parked).map(([name]) => name);
  }

  get(name) {
    return this.#channels.get(name);
  }

  /** Adds a subscriber; true when its channel is new to the book. */
  add(sub, since) {
    let channel = this.#channels.get(sub.channel);
    const isNew = channel === undefined;
    if (isNew) {
      channel = {
        cursor: since ?? null,
        streamCursor: null,
        streamSeq: 0,
        lastOffset: 0,
        parked: false,
        subscribers: new Set(),
      };
      this.#channels.set(sub.channel, channel);
    }
    channel.subscribers.add(sub);
    return isNew;
  }

  /** Removes a subscriber; true when its channel has no subscriber left and was dropped. */
  remove(sub) {
    const channel = this.#channels.get(sub.channel);
    if (!channel || !channel.subscribers.delete(sub)) return false;
    if (channel.subscribers.size > 0) return false;
    this.#channels.delete(sub.channel);
    return true;
  }

  /** Drops a channel with every subscriber it has (the server will not serve it); true when it was there. */
  drop(name) {
    return this.#channels.delete(name);
  }

  /** Keeps a channel out of connections until `unparkAll`; true when it was carried until now. */
  park(name) {
    const channel = this.#channels.get(name);
    if (!channel || channel.parked) return false;
    channel.parked = true;
    return true;
  }

  /** A new token came: every parked channel is carried again. */
  unparkAll() {
    for (const channel of this.#channels.values()) channel.parked = false;
  }

  /** The cursor to resume one channel from, or null when the page has no position in it yet. */
  resumeCursor(name) {
    const channel = this.#channels.get(name);
    return channel ? (channel.cursor ?? channel.streamCursor) : null;
  }

  /** Every `since` needed to resume `names` in one request, in the order the server must merge them. */
  sinceList(names) {
    const stream = [];
    const own = [];
    for (const name of names) {
      const channel = this.#channels.get(name);
      if (!channel) continue;
      if (channel.cursor) own.push(channel.cursor);
      else if (channel.streamCursor) stream.push([channel.streamSeq, channel.streamCursor]);
    }
    stream.sort((a, b) => a[0] - b[0]);
    return [...new Set([...stream.map(([, cursor]) => cursor), ...own])];
  }

  /** The `last=N` for the channels of `names` that have no position yet: the largest any of their subscribers asked. */
  replayCount(names) {
    let last = 0;
    for (const name of names) {
      const channel = this.#channels.get(name);
      if (!channel || this.resumeCursor(name)) continue;
      for (const sub of channel.subscribers) last = Math.max(last, sub.last);
    }
    return last;
  }

  /** Records a delivered envelope; returns its channel, or null when it must not be shown (unknown or seen). */
  accept(envelope) {
    const channel = this.#channels.get(envelope.channel);
    if (!channel) return null;
    if (Number.isInteger(envelope.offset)) {
      if (envelope.offset <= channel.lastOffset) return null;
      channel.lastOffset = envelope.offset;
    }
    if (typeof envelope.cursor === "string" && envelope.cursor) channel.cursor = envelope.cursor;
    return channel;
  }

  setCursor(name, cursor) {
    const channel = this.#channels.get(name);
    if (channel && typeof cursor === "string" && cursor) channel.cursor = cursor;
  }

  /** A multi-channel cursor from a stream: the position of those of `names` that have no own cursor. */
  noteStreamCursor(names, cursor) {
    if (typeof cursor !== "string" || !cursor) return;
    const seq = ++this.#streamCursorSeq;
    for (const name of names) {
      const channel = this.#channels.get(name);
      if (channel && !channel.cursor) {
        channel.streamCursor = cursor;
        channel.streamSeq = seq;
      }
    }
  }

  /**
   * The server said messages of `name` were lost: its offsets start over (new epoch) or jump, so the duplicate
   * check restarts. `forgetCursor` drops the position too, when the answer that reported the reset carries a
   * better one.
   */
  reset(name, forgetCursor) {
    const channel = this.#channels.get(name);
    if (!channel) return false;
    channel.lastOffset = 0;
    if (forgetCursor) {
      channel.cursor = null;
      channel.streamCursor = null;
    }
    return true;
  }
}
