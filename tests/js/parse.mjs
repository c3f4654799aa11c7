// Reads [{chunks: [base64, ...]}, ...] as JSON on stdin; writes, per case,
// the events evstream.js's Parser dispatches and the retry values it saw.
import { Parser } from "../../flask_evstream/static/evstream.js";

let input = "";
process.stdin.setEncoding("utf8");
for await (const part of process.stdin) input += part;
const out = JSON.parse(input).map(({ chunks }) => {
  const events = [];
  const retries = [];
  const parser = new Parser((e) => events.push([e.type, e.data, e.lastEventId]), (ms) => retries.push(ms));
  for (const chunk of chunks) parser.feed(Uint8Array.from(Buffer.from(chunk, "base64")));
  parser.end();
  return { events, retries };
});
process.stdout.write(JSON.stringify(out));
