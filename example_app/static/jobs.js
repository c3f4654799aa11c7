// The jobs page: start jobs, and show each one's bar from its own channel.
// The page keeps the ids of its jobs (localStorage); after a reload each bar
// replays its channel from the start and shows where the job is now.

const KEY = "demo:jobs";
const list = document.getElementById("jobs");
const sources = new Map();

const saved = () => {
  try {
    return JSON.parse(localStorage.getItem(KEY) || "[]");
  } catch {
    return [];
  }
};
const save = (jobs) => localStorage.setItem(KEY, JSON.stringify(jobs.slice(-10)));

function card(job) {
  let li = list.querySelector(`li[data-id="${job.id}"]`);
  if (li) return li;
  li = document.createElement("li");
  li.className = "job";
  li.dataset.id = job.id;
  li.dataset.state = "waiting";
  li.innerHTML = `
    <div class="job-head"><strong class="job-name"></strong><span class="job-status muted small">waiting</span></div>
    <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><div class="fill"></div></div>
    <div class="job-foot muted small"><span class="job-percent">0%</span><span class="job-eta"></span></div>`;
  li.querySelector(".job-name").textContent = job.name; // text, never HTML
  list.prepend(li);
  document.getElementById("no-jobs").hidden = true;
  return li;
}

function show(li, data, state) {
  const percent = Math.max(0, Math.min(100, Number(data.percent) || 0));
  li.dataset.state = state;
  li.dataset.percent = String(percent);
  li.dataset.step = String(data.step ?? 0);
  li.querySelector(".fill").style.width = percent + "%";
  li.querySelector(".bar").setAttribute("aria-valuenow", String(percent));
  li.querySelector(".job-percent").textContent = `${percent.toFixed(percent % 1 ? 1 : 0)}% · step ${data.step ?? 0} of ${data.of ?? "?"}`;
  const status = li.querySelector(".job-status");
  const eta = li.querySelector(".job-eta");
  if (state === "done") {
    status.textContent = `done in ${data.seconds}s`;
    eta.textContent = "result " + data.result;
  } else if (state === "failed") {
    status.textContent = "failed";
    eta.textContent = data.error || "";
  } else {
    status.textContent = "running";
    eta.textContent = data.eta != null ? `about ${Math.ceil(data.eta)}s left` : "";
  }
  document.getElementById("clear-jobs").hidden = !list.querySelector('li[data-state="done"], li[data-state="failed"]');
}

function follow(job) {
  const li = card(job);
  if (sources.has(job.id)) return;
  const source = new EventSource(`/jobs/${job.id}/events`);
  sources.set(job.id, source);
  const on = (state) => (e) => {
    const data = JSON.parse(e.data);
    show(li, data, state);
    if (state !== "running") {
      source.close(); // the job is over: do not reconnect
      sources.delete(job.id);
    }
  };
  source.addEventListener("progress", on("running"));
  source.addEventListener("done", on("done"));
  source.addEventListener("failed", on("failed"));
}

for (const job of saved()) follow(job);
if (saved().length) document.getElementById("no-jobs").hidden = true;

const form = document.getElementById("job-form");
form.onsubmit = async (e) => {
  e.preventDefault();
  const name = new FormData(form).get("name") || `Report ${saved().length + 1}`;
  const response = await fetch("/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (!response.ok) return;
  const job = await response.json();
  save([...saved(), { id: job.id, name: job.name }]);
  follow(job);
  form.reset();
};

document.getElementById("clear-jobs").onclick = () => {
  const finished = new Set([...list.querySelectorAll('li[data-state="done"], li[data-state="failed"]')].map((li) => li.dataset.id));
  save(saved().filter((job) => !finished.has(job.id)));
  for (const id of finished) list.querySelector(`li[data-id="${id}"]`).remove();
  document.getElementById("clear-jobs").hidden = true;
  document.getElementById("no-jobs").hidden = list.children.length > 0;
};
