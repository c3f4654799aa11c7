// The notifications page: the list (newest first) and the form that publishes.
import { items, markRead, onChange, seen } from "./notify.js";

const list = document.getElementById("list");
const count = document.getElementById("count");
const SHOWN = 50;

const big = (id) => BigInt(id);

function when(at) {
  const date = new Date(at * 1000);
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function render() {
  const all = [...items.values()].reverse().slice(0, SHOWN);
  const unreadFrom = seen();
  list.replaceChildren(
    ...all.map((item) => {
      const li = document.createElement("li");
      li.className = "note level-" + (["info", "success", "warning", "error"].includes(item.level) ? item.level : "info");
      li.dataset.id = item.id;
      if (big(item.id) > unreadFrom) li.classList.add("unread");
      const head = document.createElement("div");
      head.className = "note-head";
      const title = document.createElement("strong");
      title.textContent = item.title; // text, never HTML
      const time = document.createElement("time");
      time.textContent = when(item.at);
      head.append(title, time);
      li.append(head);
      if (item.body) {
        const body = document.createElement("p");
        body.textContent = item.body;
        li.append(body);
      }
      return li;
    }),
  );
  const n = items.size;
  count.textContent = n === 0 ? "No notifications yet" : n === 1 ? "1 notification" : `${n} notifications`;
}

onChange((kind) => {
  if (kind === "gap") document.getElementById("gap").hidden = false;
  render();
});
render();

document.getElementById("mark-read").onclick = () => markRead();

const form = document.getElementById("notify-form");
const result = document.getElementById("notify-result");
form.onsubmit = async (e) => {
  e.preventDefault();
  const data = Object.fromEntries(new FormData(form));
  try {
    const response = await fetch("/notify", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data),
    });
    const body = await response.json();
    result.textContent = response.ok ? `Published as #${body.id}` : body.error;
    if (response.ok) form.reset();
  } catch (error) {
    result.textContent = "Could not publish: " + error.message;
  }
};
