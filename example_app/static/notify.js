// The notifications feed of every page: one EventSource on the
// "notifications" channel, the unread badge in the top bar, and the feed's
// connection state. The notifications page adds its list on top (it imports
// this module, so a page holds one connection).
//
// The first request asks for the whole history (?lastEventId=0); when the
// browser reconnects it sends Last-Event-ID, which the server prefers, and
// gets only what it missed. An "evstream-gap" event says the history did not
// reach back: the list starts over with what follows (the kept history).

const SEEN = "demo:notifications-seen";
const listeners = new Set();

// id -> notification, in arrival order (ids increase).
export const items = new Map();

const big = (id) => {
  try {
    return BigInt(id);
  } catch {
    return 0n;
  }
};

export const seen = () => big(localStorage.getItem(SEEN) || "0");

export const unread = () => [...items.keys()].filter((id) => big(id) > seen()).length;

export function onChange(listener) {
  listeners.add(listener);
}

export function markRead() {
  let max = seen();
  for (const id of items.keys()) if (big(id) > max) max = big(id);
  localStorage.setItem(SEEN, String(max));
  changed("read");
}

function changed(kind, item) {
  const badge = document.getElementById("badge");
  const n = unread();
  badge.textContent = n > 99 ? "99+" : String(n);
  badge.hidden = n === 0;
  for (const listener of listeners) listener(kind, item);
}

function setState(state) {
  const dot = document.getElementById("feed-state");
  dot.dataset.state = state;
  dot.title = "notifications feed: " + state;
}

const source = new EventSource("/notifications/stream?lastEventId=0");
source.onopen = () => setState("live");
source.onerror = () => setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
source.addEventListener("notification", (e) => {
  if (items.has(e.lastEventId)) return;
  let data;
  try {
    data = JSON.parse(e.data);
  } catch {
    return;
  }
  const item = { id: e.lastEventId, ...data };
  items.set(item.id, item);
  changed("add", item);
});
source.addEventListener("evstream-gap", () => {
  // On the first load the page asked for everything: a gap then only says
  // that the history kept is shorter than all there ever was.
  const reload = items.size > 0;
  items.clear();
  changed(reload ? "gap" : "clear");
});
// Another tab marked them read.
window.addEventListener("storage", (e) => {
  if (e.key === SEEN) changed("read");
});
