// The admin page: asks for an admin key, keeps it in this tab only (sessionStorage), and follows
// /admin/api/events (Server-Sent Events read through fetch, so the key travels in a header, never in a URL).
// Every snapshot replaces the tables; refusals of the last minute are the difference with the snapshot taken a
// minute earlier. Without a valid key nothing is shown.

const KEY = "herald-admin-key";
const RETRY_MS = 2000;
const $ = (id) => document.querySelector(`[data-testid=${id}]`);

let controller = null;
const history = []; // [{ at, refusals }] of this node, the last minute of snapshots.

function setState(state) {
  $("state").dataset.state = state;
  $("state").textContent = state;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function lock(message) {
  controller?.abort();
  controller = null;
  sessionStorage.removeItem(KEY);
  $("dashboard").hidden = true;
  $("unlock").hidden = false;
  $("forget").hidden = true;
  setState("locked");
  showError(message);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fill(table, rows) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  for (const values of rows) {
    const row = body.insertRow();
    values.forEach((value, i) => cell(row, value, i > 0 && typeof value === "number" ? "number" : ""));
  }
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function render(s) {
  const c = s.connections;
  const total = c.ws + c.sse + c.long_poll + c.poll;
  fill("connections", [[s.node, c.ws, c.sse, c.long_poll, c.poll, total, "", s.version]]);
  const engineCell = $("connections").tBodies[0].rows[0].cells[6];
  engineCell.textContent = `${s.engine.name} ${s.engine.healthy ? "healthy" : "UNAVAILABLE"}`;
  engineCell.className = s.engine.healthy ? "" : "unhealthy";
  engineCell.dataset.testid = "engine";
  const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  $("published").textContent = s.published;
  $("delivered").textContent = sum(s.delivered);
  $("slow").textContent = sum(s.slow_consumers);

  $("busiest-window").textContent = `(over the last ${s.busiest_window_secs} s)`;
  fill("busiest", s.busiest.map((b) => [b.channel, b.rate]));
  fill("namespaces", s.namespaces.map((n) => [n.namespace, n.subscriptions, n.published, n.queued]));

  history.push({ at: s.time_ms, refusals: s.refusals });
  while (history.length > 1 && history[0].at < s.time_ms - 60000) history.shift();
  const before = history[0].refusals;
  const recent = Object.entries(s.refusals)
    .map(([reason, count]) => [reason, count - (before[reason] ?? 0), count])
    .filter(([, lastMinute, count]) => lastMinute > 0 || count > 0)
    .sort((a, b) => b[1] - a[1] || b[2] - a[2]);
  fill("refusals", recent.length ? recent : [["none", 0, 0]]);

  const h = s.history;
  $("history").textContent = `${bytes(h.bytes)} of ${bytes(h.max_bytes)} · ${h.messages} messages in ${h.channels} channel${h.channels === 1 ? "" : "s"}`;
  $("history-bar").style.width = `${Math.min(100, (100 * h.bytes) / h.max_bytes)}%`;
  $("updated").textContent = new Date(s.time_ms).toLocaleTimeString();
  window.heraldAdmin = { last: s, snapshots: (window.heraldAdmin?.snapshots ?? 0) + 1 };
}

// Reads `text/event-stream` from a fetch body: calls `onEvent(type, data)` for each complete event.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(type, data.join("\n"));
    }
  }
}

async function follow(key) {
  controller?.abort();
  controller = new AbortController();
  const { signal } = controller;
  while (!signal.aborted) {
    try {
      const response = await fetch("/admin/api/events", { headers: { Authorization: `Bearer ${key}` }, signal });
      if (response.status === 401) {
        const { error } = await response.json().catch(() => ({ error: { message: "refused" } }));
        lock(`Refused: ${error.message}`);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      $("unlock").hidden = true;
      $("dashboard").hidden = false;
      $("forget").hidden = false;
      showError("");
      setState("live");
      await readEvents(response.body, (type, data) => type === "snapshot" && render(JSON.parse(data)));
    } catch (error) {
      if (signal.aborted) return;
    }
    setState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

$("unlock").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  $("key").value = "";
  sessionStorage.setItem(KEY, key);
  follow(key);
});
$("forget").addEventListener("click", () => lock(""));

const saved = sessionStorage.getItem(KEY);
if (saved) follow(saved);
