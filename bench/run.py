"""Benchmark flask-evstream against a bare gevent app, plain Flask and sse-starlette.

Usage (from the repository root)::

    .venv/bin/python bench/run.py                  # full run, ~15 min
    .venv/bin/python bench/run.py --quick          # smoke run, ~1-2 min
    .venv/bin/python bench/run.py --scenarios B --servers bare,evstream --reps 5

Every server is a subprocess on a free 127.0.0.1 port, pinned to core 0; the
load client (``bench/client.py``) is another subprocess pinned to core 1.
The table is printed to stdout and written to ``bench/results/latest.md``,
with every raw number in ``bench/results/latest.json``. See
``bench/README.md`` for what each scenario measures and how.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import typing as t
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable

#: name -> (kind, WSGI/ASGI target, extra query of /tokens). Order is the
#: order of the tables.
SERVERS: dict[str, tuple[str, str, str]] = {
    "bare": ("gunicorn", "bench.apps.bare:app", ""),
    "flask-plain": ("gunicorn", "bench.apps.flask_plain:app", ""),
    "evstream": ("gunicorn", "bench.apps.evstream:app", ""),
    "sse-starlette": ("uvicorn", "bench.apps.sse_starlette_app:app", ""),
    # Not run by default: evstream yielding one pre-built Event (no JSON
    # encoding per event), the same work per event as `bare`.
    "evstream-prebuilt": ("gunicorn", "bench.apps.evstream:app", "&prebuilt=1"),
}
DEFAULT_SERVERS = ("bare", "flask-plain", "evstream", "sse-starlette")
BASELINE = "bare"
SCENARIOS = ("A", "B", "C")


def _gunicorn_flags() -> list[str]:
    """gunicorn >= 24 opens a control socket at a fixed path by default,
    shared by every gunicorn of the user: turn it off where it exists."""
    try:
        out = subprocess.run(
            [str(Path(PY).parent / "gunicorn"), "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return ["--no-control-socket"] if "--no-control-socket" in out else []


NO_CONTROL_SOCKET: list[str] = []


def code_fingerprint() -> dict[str, t.Any]:
    """What flask_evstream code the servers import: a hash of its sources (and
    of each file), and whether they differ from the commit (the package is
    installed editable, so the servers run the working tree)."""
    import hashlib

    pkg = ROOT / "flask_evstream"
    files = {
        str(path.relative_to(pkg)): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(pkg.rglob("*.py"))
    }
    total = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "flask_evstream"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        dirty = "?"
    return {"sha256": total, "uncommitted": bool(dirty), "status": dirty, "files": files}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Raise our soft open-file limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: str | None) -> list[str]:
    return ["taskset", "-c", core] if core is not None else []


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Server:
    """One server under test, as a subprocess in its own session."""

    def __init__(
        self, name: str, *, heartbeat: float, core: str | None, logdir: Path, tag: str
    ) -> None:
        self.name = name
        self.kind, self.target, self.tokens_query = SERVERS[name]
        self.heartbeat = heartbeat
        self.core = core
        self.port = free_port()
        self.log_path = logdir / f"{name}-{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: the process that serves the connections (gunicorn's worker)
        self.pid = 0

    def command(self) -> list[str]:
        bindir = Path(PY).parent
        if self.kind == "gunicorn":
            return pin(self.core) + [
                str(bindir / "gunicorn"),
                "-k", "gevent",
                "-w", "1",
                "--worker-connections", "20000",
                "--backlog", "4096",
                "--graceful-timeout", "2",
                *NO_CONTROL_SOCKET,
                "-b", f"127.0.0.1:{self.port}",
                "--log-level", "warning",
                self.target,
            ]  # fmt: skip
        return pin(self.core) + [
            str(bindir / "uvicorn"),
            self.target,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            "--backlog", "4096",
            "--log-level", "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, BENCH_HEARTBEAT=str(self.heartbeat), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
            if self._healthy():
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{self.name} did not answer /health in {timeout} s")
        if self.kind == "gunicorn":
            kids = children(self.proc.pid)
            if len(kids) != 1:
                raise RuntimeError(f"{self.name}: expected one gunicorn worker, found {kids}")
            self.pid = kids[0]
        else:
            self.pid = self.proc.pid

    def _healthy(self) -> bool:
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/health")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False

    def alive(self) -> bool:
        return self.pid > 0 and vm_rss_kib(self.pid) is not None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # The session we created holds the master and its worker: make sure
        # nothing of it survives (a worker stuck in a stream, say).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _show_progress(line: str) -> None:
    if not line.startswith('{"progress"'):
        return
    lv = json.loads(line)["progress"]
    kib = lv.get("kib_per_stream")
    log(
        f"    {lv['n']:>6} open: held {lv['held']}, "
        + (f"{kib:.1f} KiB/stream, " if kib is not None else "")
        + f"level opened in {lv['open_seconds']:.1f} s, first bytes p50 {lv['ttfb_ms_p50']:.0f} ms"
    )


def run_client(args: list[str], *, core: str | None, timeout: float) -> dict[str, t.Any]:
    """Run ``bench/client.py`` as its own (pinned) process; return its JSON."""
    cmd = pin(core) + [PY, "-m", "bench.client", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err_lines: list[str] = []

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            try:
                _show_progress(line)
            except (ValueError, KeyError, TypeError):
                pass

    out_parts: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        out_parts.append(proc.stdout.read())

    readers = [
        threading.Thread(target=pump_stderr, daemon=True),
        threading.Thread(target=read_stdout, daemon=True),
    ]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for r in readers:
            r.join(5)
        return {
            "error": f"client timed out after {timeout:.0f} s",
            "stderr": "".join(err_lines)[-2000:],
        }
    for r in readers:
        r.join(5)
    out = "".join(out_parts)
    err = "".join(err_lines)
    if proc.returncode != 0 or not out.strip():
        return {"error": f"client exited {proc.returncode}", "stderr": err[-2000:]}
    return t.cast(dict[str, t.Any], json.loads(out.strip().splitlines()[-1]))


# -- scenarios ----------------------------------------------------------------


def scenario_a(srv: Server, cfg: argparse.Namespace) -> dict[str, t.Any]:
    levels = cfg.levels
    budget = (
        max(levels) / cfg.open_rate + len(levels) * (cfg.open_timeout + cfg.settle) + cfg.hold + 60
    )
    res = run_client(
        [
            "idle",
            "--port", str(srv.port),
            "--path", "/idle",
            "--levels", ",".join(map(str, levels)),
            "--rate", str(cfg.open_rate),
            "--open-timeout", str(cfg.open_timeout),
            "--settle", str(cfg.settle),
            "--hold", str(cfg.hold),
            "--heartbeat", str(cfg.heartbeat),
            "--rss-pid", str(srv.pid),
        ],
        core=cfg.client_core,
        timeout=budget,
    )  # fmt: skip
    res["server_alive"] = srv.alive()
    return res


def scenario_b(srv: Server, cfg: argparse.Namespace, conns: int, events: int) -> dict[str, t.Any]:
    res = run_client(
        [
            "stream",
            "--port", str(srv.port),
            "--path", f"/tokens?n={events}{srv.tokens_query}",
            "--conns", str(conns),
            "--expect", str(events),
            "--cap", str(cfg.stream_cap),
            "--cpu-pid", str(srv.pid),
        ],
        core=cfg.client_core,
        timeout=cfg.stream_cap + 60,
    )  # fmt: skip
    if res.get("server_cpu_s") is not None and res.get("events"):
        res["server_us_per_event"] = res["server_cpu_s"] / res["events"] * 1e6
    return res


def scenario_c(srv: Server, cfg: argparse.Namespace) -> dict[str, t.Any]:
    n, interval = cfg.paced_n, cfg.paced_interval
    res = run_client(
        [
            "paced",
            "--port", str(srv.port),
            "--path", f"/paced?n={n}&interval={interval}",
            "--expect", str(n),
            "--cap", str(n * interval + 30),
        ],
        core=cfg.client_core,
        timeout=n * interval + 90,
    )  # fmt: skip
    if "streams" not in res:
        return res
    stream = res["streams"][0]
    sent, arrived = stream["sent"], stream["arrived"]
    late = [(r - s) * 1000 for s, r in zip(sent, arrived)]
    gaps = [(b - a) * 1000 for a, b in zip(arrived, arrived[1:])]
    bunched = sum(1 for g in gaps if g < cfg.bunch_ms)
    return {
        "events": len(late),
        "expected": n,
        "late_ms": late,
        "p50_ms": percentile(late, 0.5),
        "p99_ms": percentile(late, 0.99),
        "max_ms": max(late, default=None),
        "min_gap_ms": min(gaps, default=None),
        "bunched_pairs": bunched,
        "error": stream.get("error") or None,
    }


def client_ceiling(cfg: argparse.Namespace, logdir: Path) -> dict[str, t.Any]:
    """How fast the load client reads, from a server that costs next to nothing."""
    port = free_port()
    logf = open(logdir / "blaster.log", "ab")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        pin(cfg.server_core) + [PY, "-m", "bench.blaster", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    logf.close()
    out: dict[str, t.Any] = {}
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        for key, conns, n, per_send in (
            ("1x_big_writes", 1, cfg.ceiling_events, 350),
            ("1x_one_event_per_write", 1, cfg.ceiling_events // 4, 1),
            (f"{cfg.streams}x_big_writes", cfg.streams, cfg.ceiling_events // cfg.streams, 350),
        ):
            r = run_client(
                [
                    "stream",
                    "--port", str(port),
                    "--path", f"/tokens?n={n}&per_send={per_send}",
                    "--conns", str(conns),
                    "--expect", str(n),
                    "--cap", str(cfg.stream_cap),
                ],
                core=cfg.client_core,
                timeout=cfg.stream_cap + 60,
            )  # fmt: skip
            out[key] = {
                "events_per_s": r.get("events_per_s"),
                "client_cpu_share": r.get("client_cpu_share"),
                "complete": r.get("complete"),
                "conns": conns,
                "error": r.get("error"),
            }
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
    return out


# -- statistics and report ------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[t.Any]) -> dict[str, float] | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 10000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def cell(s: dict[str, float] | None, digits: int = 1) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def med(s: dict[str, float] | None) -> float | None:
    return s["median"] if s else None


def count(s: dict[str, float] | None) -> str:
    """The worst (lowest) count over the reps."""
    return "-" if not s else f"{s['min']:.0f}"


def ratio(s: dict[str, float] | None, base: dict[str, float] | None) -> str:
    if not s or not base or not base["median"]:
        return "-"
    return f"{s['median'] / base['median']:.2f}×"


def build_report(data: dict[str, t.Any]) -> tuple[str, dict[str, t.Any]]:
    cfg = data["config"]
    servers = [s for s in SERVERS if s in cfg["servers"]]
    runs = data["runs"]
    lines: list[str] = []
    summ: dict[str, t.Any] = {}
    w = lines.append
    w("# flask-evstream benchmark")
    w("")
    env = data["environment"]
    w(
        f"{env['date']} · commit `{env['commit'][:10]}` · {env['cpus']} CPUs · "
        f"Python {env['python']} · load avg {env['loadavg_start']} → {env['loadavg_end']} · "
        f"{cfg['reps']} rep(s){' · QUICK' if cfg['quick'] else ''} · "
        f"total {data['elapsed_s'] / 60:.1f} min"
    )
    w("")
    w(
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ". Servers pinned to core "
        f"{cfg['server_core']}, client to core {cfg['client_core']}. gunicorn: "
        "`-k gevent -w 1 --worker-connections 20000`; uvicorn: 1 process, "
        f"{env['uvicorn_stack']}."
    )
    w("")
    start, end = env.get("code_start", {}), env.get("code_end", {})
    if start:
        w(
            f"flask_evstream sources: sha256 `{start['sha256']}`"
            + (" (uncommitted changes)" if start.get("uncommitted") else " (as committed)")
            + "."
        )
        w("")
    if start and end and start.get("sha256") != end.get("sha256"):
        a, b = start.get("files", {}), end.get("files", {})
        changed = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
        w(
            f"**WARNING: flask_evstream changed during this run (`{start['sha256']}` → "
            f"`{end['sha256']}`; {', '.join(changed) or '?'}): if the servers import "
            "these files, the reps mix code versions; rerun.**"
        )
        w("")
    w("Cells: median over reps (min–max). Ratios: median / median of `bare`.")
    w("")

    if "A" in cfg["scenarios"]:
        w(
            f"## A. Idle streams, heartbeat every {cfg['heartbeat']:g} s "
            f"(opened at ≤ {cfg['open_rate']:g}/s)"
        )
        w("")
        w(
            "| open streams | server | held | KiB / stream | × bare | "
            "first byte p50 / p99 ms | open s |"
        )
        w("|---:|---|---:|---:|---:|---:|---:|")
        summ["A"] = {}
        for li, n in enumerate(cfg["levels"]):
            base = None
            for name in servers:
                reps = [
                    r for r in runs["A"].get(name, []) if "levels" in r and len(r["levels"]) > li
                ]
                lv = [r["levels"][li] for r in reps]
                kib = summary([x["kib_per_stream"] for x in lv])
                held = summary([x["held"] for x in lv])
                p50 = summary([x["ttfb_ms_p50"] for x in lv])
                p99 = summary([x["ttfb_ms_p99"] for x in lv])
                opened = summary([x["open_seconds"] for x in lv])
                if name == BASELINE:
                    base = kib
                summ["A"].setdefault(str(n), {})[name] = {
                    "kib_per_stream": kib,
                    "held": held,
                    "ttfb_ms_p50": p50,
                    "ttfb_ms_p99": p99,
                }
                held_txt = (
                    "-"
                    if not held
                    else f"{held['min']:.0f}/{n}" + (" ✓" if held["min"] == n else " ✗")
                )
                errs = sorted({k for x in lv for k in x.get("errors", {})})
                if errs:
                    held_txt += f" ({', '.join(errs)[:40]})"
                w(
                    f"| {n:,} | {name} | {held_txt} | {cell(kib)} | {ratio(kib, base)} | "
                    f"{fmt(med(p50))} / {fmt(med(p99))} | {fmt(med(opened))} |"
                )
        w("")
        n_max = max(cfg["levels"])
        w(
            f"After holding all {n_max:,} streams {cfg['hold']:g} s more "
            "(each must stay open and receive a heartbeat):"
        )
        w("")
        w(
            "| server | still open | got a heartbeat | KiB / stream after hold | × bare "
            "| worker alive |"
        )
        w("|---|---:|---:|---:|---:|---|")
        base = None
        summ["A"]["hold"] = {}
        for name in servers:
            reps = [r for r in runs["A"].get(name, []) if "hold" in r]
            hd = [r["hold"] for r in reps]
            kib = summary([x["kib_per_stream"] for x in hd])
            held = summary([x["held"] for x in hd])
            beat = summary([x["heartbeat_seen"] for x in hd])
            if name == BASELINE:
                base = kib
            summ["A"]["hold"][name] = {"kib_per_stream": kib, "held": held, "heartbeat_seen": beat}
            alive = all(r.get("server_alive") for r in reps) if reps else False
            w(
                f"| {name} | {count(held)}/{n_max} | "
                f"{count(beat)}/{n_max} | {cell(kib)} | {ratio(kib, base)} | "
                f"{'yes' if alive else 'NO'} |"
            )
        failed = {n: [r.get("error") for r in rs if "error" in r] for n, rs in runs["A"].items()}
        for name, errs in failed.items():
            if errs:
                w(f"\n*{name}*: {len(errs)} rep(s) failed: {errs[0]}")
        w("")

    if "B" in cfg["scenarios"]:
        w("## B. Fast token streams (OpenAI-chunk-sized events, tight loop)")
        w("")
        w(
            "| streams × events | server | events/s | × bare | complete | "
            "server CPU µs/event | server CPU | client CPU |"
        )
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        summ["B"] = {}
        for key, conns, events in (
            ("B1", 1, cfg["tokens"]),
            ("B2", cfg["streams"], cfg["stream_events"]),
        ):
            base = None
            for name in servers:
                reps = runs[key].get(name, [])
                ok = [r for r in reps if "events_per_s" in r]
                eps = summary([r["events_per_s"] for r in ok])
                us = summary([r.get("server_us_per_event") for r in ok])
                scpu = summary([r.get("server_cpu_share") for r in ok])
                ccpu = summary([r.get("client_cpu_share") for r in ok])
                if name == BASELINE:
                    base = eps
                summ["B"].setdefault(key, {})[name] = {
                    "events_per_s": eps,
                    "server_us_per_event": us,
                }
                complete = sum(r["complete"] for r in ok)
                total = conns * len(reps)
                flags = ""
                if any(r.get("capped") for r in ok):
                    flags = f" (capped at {cfg['stream_cap']:g} s)"
                if len(ok) < len(reps):
                    flags += f" ({len(reps) - len(ok)} rep(s) failed)"
                w(
                    f"| {conns} × {events:,} | {name} | {cell(eps, 0)} | {ratio(eps, base)} | "
                    f"{complete}/{total}{flags} | {cell(us, 2)} | "
                    f"{pct(med(scpu))} | {pct(med(ccpu))} |"
                )
        ceiling = data.get("client_ceiling") or {}
        if ceiling:
            w("")
            parts = []
            for key, r in ceiling.items():
                parts.append(
                    f"{key.replace('_', ' ')}: {fmt(r.get('events_per_s'), 0)} events/s "
                    f"(client CPU {fmt((r.get('client_cpu_share') or 0) * 100, 0)}%)"
                )
            w(
                "Client ceiling (a trivial blocking-socket server on the server core): "
                + "; ".join(parts)
                + "."
            )
        w("")

    if "C" in cfg["scenarios"]:
        w(
            f"## C. Paced stream: {cfg['paced_n']} events "
            f"{cfg['paced_interval'] * 1000:g} ms apart, "
            "lateness = arrival − send time"
        )
        w("")
        w(
            "| server | p50 ms | p99 ms | max ms | × bare (p99) | "
            f"bunched pairs (< {cfg['bunch_ms']:g} ms) | "
            "all ≤ 5 ms | events |"
        )
        w("|---|---:|---:|---:|---:|---:|---|---:|")
        summ["C"] = {}
        base = None
        for name in servers:
            reps = [r for r in runs["C"].get(name, []) if "late_ms" in r]
            p50 = summary([r["p50_ms"] for r in reps])
            p99 = summary([r["p99_ms"] for r in reps])
            mx = summary([r["max_ms"] for r in reps])
            bunched = sum(r["bunched_pairs"] for r in reps)
            worst = max((r["max_ms"] for r in reps if r["max_ms"] is not None), default=None)
            if name == BASELINE:
                base = p99
            got = sum(r["events"] for r in reps)
            exp = cfg["paced_n"] * len(runs["C"].get(name, []))
            summ["C"][name] = {"p50_ms": p50, "p99_ms": p99, "max_ms": mx, "bunched_pairs": bunched}
            w(
                f"| {name} | {cell(p50, 2)} | {cell(p99, 2)} | {cell(mx, 2)} | "
                f"{ratio(p99, base)} | "
                f"{bunched} | {'yes' if worst is not None and worst <= 5 else 'NO'} "
                f"(worst {fmt(worst, 2)}) | {got}/{exp} |"
            )
        w("")
    targets = _targets(cfg, summ, runs)
    if targets:
        w("## evstream against its targets")
        w("")
        w("| target | measured | met |")
        w("|---|---|---|")
        for name, measured, met in targets:
            w(f"| {name} | {measured} | {'yes' if met else '**NO**'} |")
        w("")
    return "\n".join(lines) + "\n", summ


def _targets(
    cfg: dict[str, t.Any], summ: dict[str, t.Any], runs: dict[str, t.Any]
) -> list[tuple[str, str, bool]]:
    """evstream's targets: memory/stream <= 1.25x bare, events/s >= 1.5x bare,
    paced events within 5 ms."""
    out: list[tuple[str, str, bool]] = []
    ev, base = "evstream", BASELINE
    if ev not in cfg["servers"] or base not in cfg["servers"]:
        return out
    for n, by in summ.get("A", {}).items():
        e, b = (
            med(by.get(ev, {}).get("kib_per_stream")),
            med(by.get(base, {}).get("kib_per_stream")),
        )
        if e is not None and b:
            label = f"{int(n):,} open streams" if n != "hold" else "all streams after the hold"
            out.append(
                (
                    f"A. memory per idle stream <= 1.25x bare, {label}",
                    f"{e:.1f} vs {b:.1f} KiB = {e / b:.2f}x",
                    e / b <= 1.25,
                )
            )
    for key, label in (("B1", "one stream"), ("B2", f"{cfg['streams']} streams")):
        by = summ.get("B", {}).get(key, {})
        e, b = med(by.get(ev, {}).get("events_per_s")), med(by.get(base, {}).get("events_per_s"))
        if e is not None and b:
            out.append(
                (
                    f"B. events/s >= 1.5x bare, {label}",
                    f"{e:,.0f} vs {b:,.0f} = {e / b:.2f}x",
                    e / b >= 1.5,
                )
            )
    reps = [r for r in runs.get("C", {}).get(ev, []) if "late_ms" in r]
    if reps:
        worst = max(r["max_ms"] for r in reps)
        bunched = sum(r["bunched_pairs"] for r in reps)
        got = sum(r["events"] for r in reps)
        exp = cfg["paced_n"] * len(runs["C"][ev])
        out.append(
            (
                "C. every paced event within 5 ms, none bunched",
                f"worst {worst:.2f} ms, {bunched} bunched pairs, {got}/{exp} events",
                worst <= 5 and bunched == 0 and got == exp,
            )
        )
    return out


# -- main -----------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "flask-evstream",
        "flask",
        "gunicorn",
        "gevent",
        "greenlet",
        "uvicorn",
        "starlette",
        "sse-starlette",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def uvicorn_stack() -> str:
    parts = []
    for mod, fallback in (("uvloop", "asyncio loop"), ("httptools", "h11 parser")):
        try:
            __import__(mod)
            parts.append(mod)
        except ImportError:
            parts.append(fallback)
    return " + ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (a few s per scenario)")
    p.add_argument("--scenarios", default="A,B,C", help="comma list of A, B, C (default all)")
    p.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list of {', '.join(SERVERS)} (default {','.join(DEFAULT_SERVERS)})",
    )
    p.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    p.add_argument("--levels", help="A: open-stream counts, comma list (default 1000,5000,10000)")
    p.add_argument(
        "--open-rate", type=float, help="A: connections opened per second (default 2000)"
    )
    p.add_argument("--heartbeat", type=float, help="A: heartbeat interval s (default 5; quick 2)")
    p.add_argument(
        "--hold", type=float, help="A: hold after the last level, s (default heartbeat + 2)"
    )
    p.add_argument("--tokens", type=int, help="B: events of the single stream (default 100000)")
    p.add_argument("--streams", type=int, help="B: concurrent streams (default 100)")
    p.add_argument(
        "--stream-events", type=int, help="B: events per concurrent stream (default 10000)"
    )
    p.add_argument(
        "--stream-cap", type=float, help="B: stop reading after this many s (default 45)"
    )
    p.add_argument("--paced-n", type=int, help="C: events (default 60)")
    p.add_argument("--paced-interval", type=float, default=0.05, help="C: seconds between events")
    p.add_argument(
        "--bunch-ms", type=float, default=10.0, help="C: arrivals closer than this are bunched"
    )
    p.add_argument("--server-core", default="0", help="CPU for servers ('' = no pinning)")
    p.add_argument("--client-core", default="1", help="CPU for the client ('' = no pinning)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the client-ceiling check")
    p.add_argument("--out", default=str(BENCH / "results"), help="where to write results")
    a = p.parse_args(argv)
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.levels = [int(x) for x in (a.levels or ("300" if q else "1000,5000,10000")).split(",")]
    a.open_rate = a.open_rate or 2000.0
    a.heartbeat = a.heartbeat or (2.0 if q else 5.0)
    a.hold = a.hold or a.heartbeat + 2.0
    a.tokens = a.tokens or (20_000 if q else 100_000)
    a.streams = a.streams or (20 if q else 100)
    a.stream_events = a.stream_events or (2_000 if q else 10_000)
    a.stream_cap = a.stream_cap or (10.0 if q else 45.0)
    a.paced_n = a.paced_n or (20 if q else 60)
    a.ceiling_events = 200_000 if q else 1_000_000
    a.open_timeout = 30.0
    a.settle = 1.0
    a.scenarios = [s.strip().upper() for s in a.scenarios.split(",") if s.strip()]
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in a.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    for s in a.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    if max(a.levels) + 64 > raise_nofile():
        p.error(f"open-file limit {raise_nofile()} is too low for {max(a.levels)} streams")
    a.server_core = a.server_core or None
    a.client_core = a.client_core or None
    return a


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    raise_nofile()
    NO_CONTROL_SOCKET[:] = _gunicorn_flags()
    out = Path(cfg.out)
    logdir = out / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    data: dict[str, t.Any] = {
        "config": {
            k: v
            for k, v in vars(cfg).items()
            if isinstance(v, (int, float, str, list, bool, type(None)))
        },
        "environment": {
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "commit": commit or "?",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "versions": versions(),
            "uvicorn_stack": uvicorn_stack(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "code_start": code_fingerprint(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        },
        "runs": {"A": {}, "B1": {}, "B2": {}, "C": {}},
    }
    log(
        f"servers {cfg.servers}, scenarios {cfg.scenarios}, {cfg.reps} rep(s)"
        f"{' (quick)' if cfg.quick else ''}; logs in {logdir}"
    )
    if "B" in cfg.scenarios and not cfg.no_ceiling:
        log("client ceiling check")
        data["client_ceiling"] = client_ceiling(cfg, logdir)
        for k, v in data["client_ceiling"].items():
            log(
                f"  {k}: {fmt(v.get('events_per_s'), 0)} events/s, "
                f"client CPU {pct(v.get('client_cpu_share'))}"
            )
    log(f"flask_evstream sources {data['environment']['code_start']['sha256']}")
    for rep in range(cfg.reps):
        # Rotate the server order each rep, so drift on a noisy machine does
        # not always hit the same server.
        order = cfg.servers[rep % len(cfg.servers) :] + cfg.servers[: rep % len(cfg.servers)]
        if "A" in cfg.scenarios:
            for name in order:
                log(f"rep {rep + 1}/{cfg.reps} A {name}: opening {cfg.levels}")
                srv = Server(
                    name, heartbeat=cfg.heartbeat, core=cfg.server_core, logdir=logdir, tag="A"
                )
                try:
                    srv.start()
                    res = scenario_a(srv, cfg)
                except Exception as e:  # a server that fails is a result too
                    res = {"error": f"{type(e).__name__}: {e}"}
                finally:
                    srv.stop()
                if "error" in res:
                    log(f"    FAILED: {res['error']} {res.get('stderr', '')[-500:]}")
                elif "hold" in res:
                    h = res["hold"]
                    log(
                        f"    hold: {h['held']}/{h['n']} open, "
                        f"{h['heartbeat_seen']} got a heartbeat, "
                        f"{fmt(h['kib_per_stream'])} KiB/stream"
                    )
                data["runs"]["A"].setdefault(name, []).append(res)
        if "B" in cfg.scenarios or "C" in cfg.scenarios:
            for name in order:
                srv = Server(
                    name, heartbeat=cfg.heartbeat, core=cfg.server_core, logdir=logdir, tag="BC"
                )
                try:
                    srv.start()
                except Exception as e:
                    log(f"rep {rep + 1}/{cfg.reps} {name}: server failed to start: {e}")
                    for key in ("C", "B1", "B2"):
                        data["runs"][key].setdefault(name, []).append({"error": str(e)})
                    srv.stop()
                    continue
                try:
                    if "C" in cfg.scenarios:
                        res = scenario_c(srv, cfg)
                        data["runs"]["C"].setdefault(name, []).append(res)
                        log(
                            f"rep {rep + 1}/{cfg.reps} C {name}: "
                            + (
                                f"{res['events']}/{res['expected']} events, lateness p50 "
                                f"{fmt(res['p50_ms'], 2)} p99 {fmt(res['p99_ms'], 2)} max "
                                f"{fmt(res['max_ms'], 2)} ms, {res['bunched_pairs']} bunched"
                                if "late_ms" in res
                                else f"FAILED {res}"
                            )
                        )
                        time.sleep(0.3)
                    if "B" in cfg.scenarios:
                        for key, conns, events in (
                            ("B1", 1, cfg.tokens),
                            ("B2", cfg.streams, cfg.stream_events),
                        ):
                            res = scenario_b(srv, cfg, conns, events)
                            data["runs"][key].setdefault(name, []).append(res)
                            log(
                                f"rep {rep + 1}/{cfg.reps} {key} {name}: {conns} × {events}: "
                                + (
                                    f"{fmt(res['events_per_s'], 0)} events/s, "
                                    f"{res['complete']}/{conns} complete"
                                    f"{' CAPPED' if res['capped'] else ''}, "
                                    f"server {fmt(res.get('server_us_per_event'), 2)} µs/event, "
                                    f"client CPU {res['client_cpu_share'] * 100:.0f}%"
                                    if "events_per_s" in res
                                    else f"FAILED {res}"
                                )
                            )
                            time.sleep(0.3)
                finally:
                    srv.stop()
    data["environment"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data["environment"]["code_end"] = code_fingerprint()
    data["elapsed_s"] = time.monotonic() - started
    report, summ = build_report(data)
    data["summary"] = summ
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / "latest.md").write_text(report)
    (out / f"run-{stamp}.md").write_text(report)
    js = json.dumps(data, indent=1, default=str)
    (out / "latest.json").write_text(js)
    (out / f"run-{stamp}.json").write_text(js)
    sys.stdout.write(report)
    log(f"written {out / 'latest.md'} and {out / 'latest.json'} ({data['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
