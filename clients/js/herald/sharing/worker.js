// The SharedWorker that runs the hub of an origin's shared connection (sharing/hub.js) for every tab that uses
// the same Herald server. Served by the server beside the other modules, so it has the page's origin when the page
// comes from the server's origin; a page of another origin cannot start it, and its tabs elect one of them instead.

import { resolveEnv } from "../runtime.js";
import { SharedHub } from "./hub.js";

const ports = new Map(); // tab -> its MessagePort
let hub = null;

function send(tabs, message) {
  for (const tab of tabs) ports.get(tab)?.postMessage(message);
}

function tabGone(tab) {
  ports.delete(tab);
  hub?.tabGone(tab);
}

globalThis.onconnect = (event) => {
  const port = event.ports[0];
  port.onmessage = ({ data: message }) => {
    if (message?.type === "hello") {
      if (!ports.has(message.tab)) {
        // The tab's own lock is free once it has closed.
        globalThis.navigator?.locks?.request(`herald-tab ${message.tab}`, () => tabGone(message.tab));
      }
      ports.set(message.tab, port);
      hub ??= new SharedHub({ opts: message.opts, env: resolveEnv({}), baseUrl: message.baseUrl, send });
      hub.hello(message.tab);
    } else if (message?.type === "bye") {
      tabGone(message.tab);
    } else {
      hub?.receive(message);
    }
  };
  port.start();
};
