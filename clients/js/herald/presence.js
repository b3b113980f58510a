// Who is in the channels whose presence the page follows: one list of members per channel, kept from what the
// transports report. A transport reports either a whole list (a WebSocket `presence` answer, an SSE stream's
// `herald.presence` event, a poll of `/v1/channels/{channel}/presence`) or one change (`join`, `leave`). A whole
// list is compared with the one the page has, so a reconnect, a switch of transport or a poll tells the page only
// what changed; a change that changes nothing (a join of a member already listed) is not told.

/** A member as the server sends it: `{ user_id, user_info }`. */
function isMember(member) {
  return member !== null && typeof member === "object" && typeof member.user_id === "string";
}

/**
 * The members of every channel some watcher follows, and its watchers: `{ channel, onJoin, onLeave, onChange }`.
 * `onJoin(member)` and `onLeave(member)` say what changed after the first list; `onChange(members)` gives the whole
 * list every time it changes, the first list included.
 */
export class Rosters {
  #channels = new Map();
  #report;

  /** `report(error)` gets what a watcher's handler throws. */
  constructor(report) {
    this.#report = report;
  }

  /** The channels whose presence is followed. */
  channels() {
    return [...this.#channels.keys()];
  }

  /** Whether `channel`'s presence is followed. */
  has(channel) {
    return this.#channels.has(channel);
  }

  /** Adds a watcher; true when its channel's presence was not followed before. */
  watch(watcher) {
    let roster = this.#channels.get(watcher.channel);
    const isNew = roster === undefined;
    if (isNew) {
      roster = { members: new Map(), known: false, watchers: new Set() };
      this.#channels.set(watcher.channel, roster);
    }
    roster.watchers.add(watcher);
    return isNew;
  }

  /** Removes a watcher; true when its channel's presence is followed no more. */
  unwatch(watcher) {
    const roster = this.#channels.get(watcher.channel);
    if (!roster || !roster.watchers.delete(watcher)) return false;
    if (roster.watchers.size > 0) return false;
    this.#channels.delete(watcher.channel);
    return true;
  }

  /** The members of `channel`, in the server's order for a list, then in order of arrival. */
  members(channel) {
    return [...(this.#channels.get(channel)?.members.values() ?? [])];
  }

  /** A whole list of `channel`'s members: what differs from the page's list is told. */
  replace(channel, list) {
    const roster = this.#channels.get(channel);
    if (!roster || !Array.isArray(list)) return;
    const next = new Map(list.filter(isMember).map((member) => [member.user_id, member]));
    const joined = roster.known ? [...next.values()].filter((m) => !roster.members.has(m.user_id)) : [];
    const left = roster.known ? [...roster.members.values()].filter((m) => !next.has(m.user_id)) : [];
    const changed = !roster.known || joined.length > 0 || left.length > 0;
    roster.members = next;
    roster.known = true;
    for (const member of left) this.#tell(roster, "onLeave", member);
    for (const member of joined) this.#tell(roster, "onJoin", member);
    if (changed) this.#tell(roster, "onChange", this.members(channel));
  }

  /** One member of `channel` joined (`join`) or left. */
  change(channel, join, member) {
    const roster = this.#channels.get(channel);
    if (!roster || !roster.known || !isMember(member)) return;
    if (join === roster.members.has(member.user_id)) return;
    if (join) roster.members.set(member.user_id, member);
    else roster.members.delete(member.user_id);
    this.#tell(roster, join ? "onJoin" : "onLeave", member);
    this.#tell(roster, "onChange", this.members(channel));
  }

  #tell(roster, handler, value) {
    for (const watcher of [...roster.watchers]) {
      try {
        watcher[handler]?.(value);
      } catch (error) {
        this.#report(error);
      }
    }
  }
}
