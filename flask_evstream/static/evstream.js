// evstream.js: the browser client of flask-evstream (no dependencies, no build step).
// Reads server-sent events with fetch (any method, any headers), resumes a
// resumable stream by GET on its Content-Location with Last-Event-ID, and
// never sends the first request (a POST that runs a model) twice.
// Served by the extension at <EVSTREAM_URL_PREFIX>/evstream.js. BSD-3-Clause.

export const VERSION = "0.2.0";

const END_EVENT = "evstream-end";

// An incremental parser of text/event-stream, as the WHATWG HTML standard
// ("Server-sent events", 9.2.6) says: bytes in, events out. Line ends CR, LF
// or CRLF (a CRLF split across two chunks is one line end); UTF-8 decoded in
// stream mode (a character split across chunks is whole); one leading BOM
// ignored; comments ignored; `retry` only when all ASCII digits; an `id`
// holding NUL ignored; an event left without its blank line at the end is
// not dispatched.
export class Parser {
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent;
    this.onRetry = onRetry || (() => {});
    this.decoder = new TextDecoder("utf-8"); // strips one leading BOM
    this.line = "";
    this.afterCR = false;
    this.data = "";
    this.type = "";
    this.lastEventId = ""; // the last event ID buffer: it persists
  }

  feed(chunk) {
    this.text(typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true }));
  }

  // Feed decoded text (what feed() does after decoding).
  text(text) {
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 && this.afterCR) {
        // The LF of a CRLF: the line already ended at the CR.
        this.afterCR = false;
        start = i + 1;
        continue;
      }
      this.afterCR = false;
      if (c === 10 || c === 13) {
        this.line += text.slice(start, i);
        this.processLine(this.line);
        this.line = "";
        this.afterCR = c === 13;
        start = i + 1;
      }
    }
    this.line += text.slice(start);
  }

  // The end of the stream: flush the decoder; an unterminated event is dropped.
  end() {
    const rest = this.decoder.decode();
    if (rest) this.text(rest);
    this.line = "";
    this.data = "";
    this.type = "";
  }

  processLine(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return;
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    }
    if (field === "event") this.type = value;
    else if (field === "data") this.data += value + "\n";
    else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10));
    }
  }

  dispatch() {
    const lastEventId = this.lastEventId;
    if (this.data === "") {
      this.type = "";
      return;
    }
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    const event = { type: this.type || "message", data, lastEventId };
    this.data = "";
    this.type = "";
    this.onEvent(event);
  }
}

function storage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null; // storage refused (a sandboxed frame)
  }
}

function withoutBodyHeaders(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers || {})) {
    const lower = name.toLowerCase();
    if (lower !== "content-type" && lower !== "content-length" && lower !== "last-event-id") {
      out[name] = value;
    }
  }
  return out;
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

// Read a stream. Options: method, headers, body (the first request only),
// signal, onOpen(response), onEvent({type, data, lastEventId}), onEnd(reason),
// resumeKey (keep the resume URL and last id in sessionStorage), credentials
// (fetch's: "include" sends cookies to another origin, on every request of
// the stream: the first, each resume and the stop), fetch.
// Returns {stop(), done}: `done` resolves with the ending's reason:
// "done", "cancelled", "failed", "lost", "expired" (the server's endings),
// "stopped" (stop()), "network" (a stream that cannot resume broke),
// "not-found" (404), or "http-<status>" (the first request was refused).
export function stream(url, options = {}) {
  const {
    method = "GET",
    headers = {},
    body,
    signal,
    onOpen,
    onEvent,
    onEnd,
    resumeKey,
    credentials = "same-origin",
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    maxDelay = 30000,
  } = options;
  const controller = new AbortController();
  let resumeUrl = options.resumeUrl || null;
  let resumable = Boolean(options.resumeUrl); // a Content-Location came: DELETE stops it
  let lastId = options.lastEventId || "";
  let retry = 1000;
  let stopped = false;
  let ended = null;
  let resolveDone;
  const done = new Promise((resolve) => (resolveDone = resolve));

  const save = () => {
    const store = resumeKey && resumeUrl ? storage() : null;
    if (store) store.setItem("evstream:" + resumeKey, JSON.stringify({ url: resumeUrl, lastId }));
  };
  const finish = (reason) => {
    if (ended !== null) return;
    ended = reason;
    const store = resumeKey ? storage() : null;
    if (store) store.removeItem("evstream:" + resumeKey);
    if (onEnd) onEnd(reason);
    resolveDone(reason);
  };

  const run = async () => {
    let first = !options.resumeUrl;
    let failures = 0;
    while (!stopped && ended === null) {
      const target = first ? url : resumeUrl;
      const init = first
        ? { method, headers, body }
        : { method: "GET", headers: { ...withoutBodyHeaders(headers), ...(lastId ? { "Last-Event-ID": lastId } : {}) } };
      let gotEvents = false;
      try {
        const response = await fetchImpl(target, { ...init, credentials, signal: controller.signal, cache: "no-store" });
        if (response.status === 204) return finish("done");
        if (response.status === 404) return finish("not-found");
        if (!response.ok) {
          if (first || response.status < 500) return finish("http-" + response.status);
          throw new Error("HTTP " + response.status); // a resume that may work later
        }
        if (first) {
          const location = response.headers.get("Content-Location");
          if (location) {
            resumeUrl = new URL(location, response.url || target).href;
            resumable = true;
          } else if (method.toUpperCase() === "GET") resumeUrl = new URL(target, globalThis.location?.href).href;
          first = false;
          save();
        }
        if (onOpen) onOpen(response);
        const parser = new Parser(
          (event) => {
            if (event.type === END_EVENT) {
              let reason = "failed";
              try {
                reason = JSON.parse(event.data).reason || reason;
              } catch {}
              return finish(reason);
            }
            gotEvents = true;
            lastId = event.lastEventId;
            save();
            if (onEvent && ended === null) onEvent(event);
          },
          (ms) => (retry = ms),
        );
        parser.lastEventId = lastId;
        const reader = response.body.getReader();
        while (ended === null) {
          const { value, done: eof } = await reader.read();
          if (eof) break;
          parser.feed(value);
        }
        parser.end();
        if (ended !== null) {
          reader.cancel().catch(() => {});
          return;
        }
        // Ended without its recorded ending: resume (a 204 then says done).
      } catch (error) {
        if (stopped || ended !== null) return;
      }
      if (!resumeUrl) return finish("network");
      failures = gotEvents ? 0 : failures + 1;
      const delay = Math.min(maxDelay, retry * 2 ** Math.max(0, failures - 1));
      await sleep(gotEvents ? 0 : delay * (0.5 + Math.random() / 2), controller.signal);
    }
  };

  const handle = {
    get resumeUrl() {
      return resumeUrl;
    },
    get lastEventId() {
      return lastId;
    },
    done,
    // Stop reading and tell the server to stop generating (DELETE).
    stop() {
      if (ended !== null) return done;
      stopped = true;
      controller.abort();
      if (resumable) {
        fetchImpl(resumeUrl, { method: "DELETE", headers: withoutBodyHeaders(headers), credentials }).catch(() => {});
      }
      finish("stopped");
      return done;
    },
  };
  if (signal) signal.addEventListener("abort", () => handle.stop());
  run().catch(() => finish("network"));
  return handle;
}

// Continue, after a page reload, the stream started with this resumeKey.
// Returns the handle, or null when there is nothing to resume.
export function resume(resumeKey, options = {}) {
  const store = storage();
  const saved = store && store.getItem("evstream:" + resumeKey);
  if (!saved) return null;
  let state;
  try {
    state = JSON.parse(saved);
  } catch {
    store.removeItem("evstream:" + resumeKey);
    return null;
  }
  return stream(state.url, { ...options, resumeKey, resumeUrl: state.url, lastEventId: state.lastId });
}
