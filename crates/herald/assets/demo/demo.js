// The live dashboard of `herald demo`: the same channel shown by four clients, each pinned to one technique,
// so a visitor sees them move together and how their delays differ. Below, one scenario per technique that
// suits it: an order status (short polling), a chat (WebSocket), notifications (SSE). The lower cards reuse the
// pinned clients, which also shows a client multiplexing several channels over its one connection.
//
// For the browser tests, window.heraldDemo records every (offset, name) each panel delivered, where a server
// reset started a channel over, and each panel's connection states.
//
// The chat shows who is in the room: the WebSocket client presents a token (from the demo's /demo/token, naming
// the visitor by the name in the chat form) and follows the presence of `chat:lobby`.

import { Herald } from "/v1/herald.js";

const TECHNIQUES = [
  { key: "poll", title: "Short polling", how: "GET /v1/poll every 3 s" },
  { key: "long-poll", title: "Long polling", how: "GET /v1/poll?wait=25, held until news" },
  { key: "sse", title: "Server-Sent Events", how: "one EventSource on /v1/sse" },
  { key: "websocket", title: "WebSocket", how: "one socket on /v1/ws" },
];
const CHART_POINTS = 30;
const ORDER_STEPS = ["pending", "preparing", "in-delivery", "delivered"];
const STATE_LABELS = {
  idle: "idle",
  connecting: "connecting…",
  connected: "live",
  reconnecting: "reconnecting…",
  offline: "offline",
};

const demo = { sequences: {}, names: {}, resets: {}, states: {}, delays: {}, clients: {} };
window.heraldDemo = demo;

function showState(client, badge) {
  const render = ({ state }) => {
    badge.dataset.state = state;
    badge.textContent = STATE_LABELS[state] ?? state;
  };
  render(client.state);
  client.on("state", render);
}

function formatDelay(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
}

function restartAnimation(node, className) {
  node.classList.remove(className);
  void node.offsetWidth; // a reflow, so that adding the class again replays the animation
  node.classList.add(className);
}

// --- the four panels

const charts = [];
let chartFrame = 0;

/** Every chart shares one scale, so the techniques compare at a glance. */
function drawCharts() {
  chartFrame = 0;
  const max = Math.max(100, ...charts.flatMap(({ delays }) => delays));
  for (const { delays, svg, label } of charts) {
    const step = 300 / (CHART_POINTS - 1);
    const points = delays.map((delay, i) => {
      const x = (CHART_POINTS - delays.length + i) * step;
      const y = 78 - (delay / max) * 72;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svg.querySelector(".line").setAttribute("points", points.join(" "));
    const area = points.length ? [`${points[0].split(",")[0]},80`, ...points, `${points.at(-1).split(",")[0]},80`] : [];
    svg.querySelector(".area").setAttribute("points", area.join(" "));
    label.textContent = `scale 0–${formatDelay(max)}`;
  }
}

function scheduleCharts() {
  if (!chartFrame) chartFrame = requestAnimationFrame(drawCharts);
}

/** A token that names the visitor as the chat form does: the demo server issues it (a real app's backend would). */
async function visitorToken() {
  const name = document.querySelector("[data-testid=chat-name]").value.trim() || "guest";
  const res = await fetch(`/demo/token?name=${encodeURIComponent(name)}`);
  return res.ok ? res.text() : null;
}

function mountPanel({ key, title, how }, template, container) {
  const panel = template.content.firstElementChild.cloneNode(true);
  panel.dataset.testid = `panel-${key}`;
  panel.dataset.transport = key;
  panel.querySelector(".technique").textContent = title;
  panel.querySelector(".how").textContent = how;
  container.append(panel);

  const topSeller = panel.querySelector("[data-testid=top-seller]");
  const count = panel.querySelector("[data-testid=count]");
  const delayOut = panel.querySelector("[data-testid=delay]");
  const average = panel.querySelector("[data-testid=average]");
  const resetNote = panel.querySelector("[data-testid=reset-note]");
  const sequence = (demo.sequences[key] = []);
  const names = (demo.names[key] = []);
  const resets = (demo.resets[key] = []);
  const delays = (demo.delays[key] = []);
  charts.push({ delays, svg: panel.querySelector("svg"), label: panel.querySelector(".chart-max") });

  // The WebSocket client carries the chat, so it presents the visitor.
  const token = key === "websocket" ? visitorToken : null;
  const client = new Herald(location.origin, { transports: [key], token });
  demo.clients[key] = client;
  showState(client, panel.querySelector("[data-testid=state]"));
  const states = (demo.states[key] = []);
  client.on("state", ({ state }) => states.push(state));

  client.on("reset", ({ channel }) => {
    if (channel !== "dashboard") return;
    resets.push(sequence.length);
    resetNote.hidden = false;
  });
  // Every offset of the channel is recorded, whatever its event, so a gap is visible to the tests.
  client.on("message", (msg) => {
    if (msg.channel !== "dashboard") return;
    sequence.push(msg.offset);
    names.push(msg.event === "newTopSeller" ? (msg.data?.top_seller ?? null) : null);
  });
  client.subscribe("dashboard", { last: 1, event: "newTopSeller" }, (data, msg) => {
    const delay = Math.max(0, Date.now() - Date.parse(msg.time));
    delays.push(delay);
    if (delays.length > CHART_POINTS) delays.shift();
    topSeller.textContent = data.top_seller;
    restartAnimation(topSeller, "fresh");
    count.textContent = String(sequence.length);
    delayOut.textContent = formatDelay(delay);
    average.textContent = formatDelay(delays.reduce((a, b) => a + b, 0) / delays.length);
    scheduleCharts();
  });
  return client;
}

// --- order status, over the short-polling client

function mountOrder(client) {
  const card = document.querySelector("[data-testid=order]");
  showState(client, card.querySelector("[data-testid=state]"));
  const steps = [...card.querySelectorAll("[data-step]")];
  const eta = card.querySelector("[data-testid=order-eta]");
  client.subscribe("orders:1001", { last: 1, event: "orderStatus" }, (data) => {
    const current = ORDER_STEPS.indexOf(data.status);
    steps.forEach((step, i) => {
      step.classList.toggle("done", i < current || data.status === "delivered");
      step.classList.toggle("current", i === current && data.status !== "delivered");
    });
    card.dataset.status = data.status;
    eta.textContent =
      data.status === "delivered"
        ? "Delivered. Enjoy your meal!"
        : `Estimated arrival in ${data.eta_minutes ?? "?"} min`;
  });
}

// --- chat, over the WebSocket client

function guestName() {
  const animals = ["Falcon", "Oryx", "Gazelle", "Ibis", "Lynx", "Heron", "Fennec", "Camel"];
  return `${animals[Math.floor(Math.random() * animals.length)]}-${Math.floor(100 + Math.random() * 900)}`;
}

function mountChat(client) {
  const card = document.querySelector("[data-testid=chat]");
  showState(client, card.querySelector("[data-testid=state]"));
  const log = card.querySelector("[data-testid=chat-log]");
  const form = card.querySelector("[data-testid=chat-form]");
  const name = card.querySelector("[data-testid=chat-name]");
  const text = card.querySelector("[data-testid=chat-input]");
  const send = card.querySelector("[data-testid=chat-send]");
  const error = card.querySelector("[data-testid=chat-error]");
  const members = card.querySelector("[data-testid=chat-members]");
  const memberCount = card.querySelector("[data-testid=chat-member-count]");

  client.presence("chat:lobby", {
    onChange: (list) => {
      members.replaceChildren(
        ...list.map((member) => {
          const item = document.createElement("li");
          item.dataset.testid = "chat-member";
          item.textContent = String(member.user_info?.name ?? member.user_id);
          item.classList.toggle("me", member.user_id === name.value.trim());
          return item;
        }),
      );
      memberCount.textContent = String(list.length);
    },
  });
  // A new name is a new token, and the room sees the old name leave and the new one join.
  name.addEventListener("change", () => client.setToken(visitorToken));

  client.subscribe("chat:lobby", { last: 20, event: "chat" }, (data, msg) => {
    const item = document.createElement("li");
    item.dataset.testid = "chat-message";
    item.classList.toggle("mine", data.user === name.value);
    const who = document.createElement("strong");
    who.textContent = String(data.user ?? "someone");
    const said = document.createElement("span");
    said.className = "text";
    said.textContent = String(data.text ?? "");
    const when = document.createElement("time");
    when.dateTime = msg.time;
    when.textContent = new Date(msg.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    item.append(who, said, when);
    log.append(item);
    while (log.children.length > 100) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = { user: name.value.trim() || "guest", text: text.value.trim() };
    if (!message.text) return;
    send.disabled = true;
    error.hidden = true;
    try {
      await client.publish("chat:lobby", "chat", message);
      text.value = "";
    } catch (err) {
      error.textContent = `Not sent: ${err.message}`;
      error.hidden = false;
    } finally {
      send.disabled = false;
      text.focus();
    }
  });
}

// --- notifications, over the SSE client

function toast({ title, body }) {
  const box = document.querySelector("[data-testid=toasts]");
  const item = document.createElement("div");
  item.className = "toast";
  item.dataset.testid = "toast";
  const heading = document.createElement("strong");
  heading.textContent = title;
  const text = document.createElement("p");
  text.textContent = body;
  item.append(heading, text);
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.classList.add("leaving"), 4000);
  setTimeout(() => item.remove(), 4500);
}

function mountNotifications(client) {
  const card = document.querySelector("[data-testid=notifications]");
  showState(client, card.querySelector("[data-testid=state]"));
  const list = card.querySelector("[data-testid=notification-list]");
  client.subscribe("notifications", { last: 1, event: "notification" }, (data, msg) => {
    list.querySelector(".empty")?.remove();
    const item = document.createElement("li");
    item.dataset.testid = "notification";
    const title = document.createElement("strong");
    title.textContent = String(data.title ?? "Notification");
    const body = document.createElement("p");
    body.textContent = String(data.body ?? "");
    const when = document.createElement("time");
    when.dateTime = msg.time;
    when.textContent = new Date(msg.time).toLocaleTimeString();
    item.append(title, body, when);
    list.prepend(item);
    while (list.children.length > 6) list.lastElementChild.remove();
    // A replayed notification (from `last`) goes in the list, but only a fresh one pops up.
    if (Date.now() - Date.parse(msg.time) < 10000) toast({ title: title.textContent, body: body.textContent });
  });
}

// --- start

document.querySelector("[data-testid=chat-name]").value = guestName();
const template = document.getElementById("panel-template");
const container = document.querySelector("[data-testid=panels]");
const clients = Object.fromEntries(TECHNIQUES.map((t) => [t.key, mountPanel(t, template, container)]));
mountOrder(clients.poll);
mountChat(clients.websocket);
mountNotifications(clients.sse);
