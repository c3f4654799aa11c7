// The chat page: sends the conversation to /v1/chat/completions as a POST
// with "stream": true and types the answer as its chunks arrive. The stream
// is resumable: evstream.js keeps its resume URL and last id (resumeKey), so
// after a cut it resumes by GET, and after a reload the page continues the
// same answer; the POST, which runs the model, is never sent twice. Stop
// sends a DELETE: the server stops the generator, wherever it runs.
import * as evs from "evstream";

const KEY = "demo:chat";
const RESUME = "demo-chat";
const model = document.getElementById("chat-script").dataset.model;
const messagesEl = document.getElementById("messages");
const prompt = document.getElementById("prompt");
const send = document.getElementById("send");
const stop = document.getElementById("stop");
const conn = document.getElementById("conn");

// {messages: [{role, content, status?}], pending: {content} | null}
let state = load();
let handle = null;
let live = null; // the text node the answer is typed into

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) || { messages: [], pending: null };
  } catch {
    return { messages: [], pending: null };
  }
}
const persist = () => sessionStorage.setItem(KEY, JSON.stringify(state));

function setConn(value) {
  conn.dataset.state = value;
  conn.textContent = value;
}

function bubble(message, streaming = false) {
  const li = document.createElement("li");
  li.className = "msg " + message.role + (streaming ? " streaming" : "");
  if (message.status) li.dataset.status = message.status;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = message.role === "user" ? "You" : "Assistant";
  const text = document.createElement("div");
  text.className = "text";
  const node = document.createTextNode(message.content); // text, never HTML
  text.append(node);
  li.append(who, text);
  if (streaming) {
    const cursor = document.createElement("span");
    cursor.className = "cursor";
    cursor.setAttribute("aria-hidden", "true");
    text.append(cursor);
  }
  if (message.status && message.status !== "done") {
    const note = document.createElement("div");
    note.className = "status";
    note.textContent = { stopped: "Stopped", cancelled: "Stopped", failed: "The answer failed", lost: "The server lost this answer", expired: "Timed out", network: "Connection lost" }[message.status] || message.status;
    li.append(note);
  }
  messagesEl.append(li);
  li.scrollIntoView({ block: "end" });
  return node;
}

function render() {
  messagesEl.replaceChildren();
  for (const message of state.messages) bubble(message);
  live = state.pending ? bubble({ role: "assistant", content: state.pending.content }, true) : null;
  document.getElementById("empty").hidden = state.messages.length > 0 || state.pending !== null;
  const busy = state.pending !== null;
  send.hidden = busy;
  stop.hidden = !busy;
  prompt.disabled = busy;
}

function onEvent(event) {
  if (event.data === "[DONE]") return;
  let chunk;
  try {
    chunk = JSON.parse(event.data);
  } catch {
    return;
  }
  const piece = chunk.choices?.[0]?.delta?.content;
  if (!piece || !state.pending) return;
  state.pending.content += piece;
  persist();
  live.appendData(piece);
  live.parentNode.parentNode.scrollIntoView({ block: "end" });
}

function onEnd(reason) {
  if (state.pending) {
    state.messages.push({ role: "assistant", content: state.pending.content, status: reason });
    state.pending = null;
    persist();
  }
  handle = null;
  window.lastEnd = reason;
  setConn(reason === "done" ? "idle" : reason);
  render();
  prompt.focus();
}

// Counts the requests, to show "connecting" and then "reconnecting".
function countingFetch() {
  let requests = 0;
  return (url, init) => {
    setConn(requests++ === 0 ? "connecting" : "reconnecting");
    return fetch(url, init);
  };
}

const options = () => ({
  onOpen: () => setConn("streaming"),
  onEvent,
  onEnd,
  resumeKey: RESUME,
  fetch: countingFetch(),
});

function ask(text) {
  state.messages.push({ role: "user", content: text });
  state.pending = { content: "" };
  persist();
  render();
  const history = state.messages.map(({ role, content }) => ({ role, content }));
  handle = evs.stream("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ model, messages: history, stream: true }),
    ...options(),
  });
}

document.getElementById("composer").onsubmit = (e) => {
  e.preventDefault();
  const text = prompt.value.trim();
  if (!text || handle) return;
  prompt.value = "";
  ask(text);
};
prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    document.getElementById("composer").requestSubmit();
  }
});
stop.onclick = () => handle && handle.stop();
document.getElementById("new-chat").onclick = () => {
  if (handle) handle.stop();
  state = { messages: [], pending: null };
  persist();
  render();
};

render();
if (state.pending) {
  // A reload mid-answer: continue it from the last event this page showed.
  handle = evs.resume(RESUME, options());
  if (!handle) onEnd("network");
  else setConn("reconnecting");
}
window.chatReady = true;
