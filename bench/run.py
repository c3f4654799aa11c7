"""Benchmark flask-evstream against a bare gevent app, plain Flask and sse-starlette.

Usage (from the repository root)::

    .venv/bin/python bench/run.py                  # full run (A-D, 3 reps), ~15 min
    .venv/bin/python bench/run.py --quick          # smoke run, ~2-3 min
    .venv/bin/python bench/run.py --scenarios B --servers bare,evstream --reps 5
    .venv/bin/python bench/run.py --scenarios D    # broadcast latency only

Scenarios: A idle streams, B token throughput, C paced stream, D broadcast
latency (one publisher, thousands of subscribers on one worker). Each server
takes part in the scenarios its row is for (``--list`` shows them); the
``--servers`` list is filtered per scenario.

Every server is a subprocess on a free 127.0.0.1 port, pinned to core 0; the
load client (``bench/client.py``) is another subprocess pinned to core 1.
The table is printed to stdout and written to ``bench/results/latest.md``,
with every raw number in ``bench/results/latest.json``. See
``bench/README.md`` for what each scenario measures and how.
"""

from __future__ import annotations

import argparse
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Spec:
    """How to run one server row."""

    kind: str  # "gunicorn" (gevent worker) or "uvicorn"
    target: str  # the WSGI/ASGI app
    scenarios: str  # the scenarios this row takes part in
    what: str  # one line for --list
    idle_path: str = "/idle"  # scenario A's stream
    tokens_query: str = ""  # added to scenario B's /tokens?n=N
    broker: str = ""  # "redis": a redis-server is started for it


#: Every server row. Order is the order of the tables (each scenario's
#: baseline first).
SERVERS: dict[str, Spec] = {
    "bare": Spec("gunicorn", "bench.apps.bare:app", "ABC", "plain WSGI, pre-encoded bytes"),
    "flask-plain": Spec(
        "gunicorn", "bench.apps.flask_plain:app", "ABC", "Response(generator), f-string + json"
    ),
    "evstream": Spec(
        "gunicorn", "bench.apps.evstream:app", "ABC", "@sse_route generator (dict -> JSON)"
    ),
    "evstream-stdlib": Spec(
        "gunicorn",
        "bench.apps.evstream_stdlib:app",
        "B",
        "the evstream row with orjson blocked (dict -> JSON by the standard library)",
    ),
    "evstream-sub": Spec(
        "gunicorn",
        "bench.apps.evstream:app",
        "A",
        "@sse_route view returning sse.subscribe('idle')",
        idle_path="/idle-sub",
    ),
    "evstream-str": Spec(
        "gunicorn",
        "bench.apps.evstream:app",
        "B",
        "@sse_route generator yielding a constant pre-serialized JSON str",
        tokens_query="&str=1",
    ),
    "evstream-prebuilt": Spec(
        "gunicorn",
        "bench.apps.evstream:app",
        "B",
        "@sse_route generator yielding one pre-built Event",
        tokens_query="&prebuilt=1",
    ),
    "sse-starlette": Spec(
        "uvicorn", "bench.apps.sse_starlette_app:app", "ABCD", "EventSourceResponse on uvicorn"
    ),
    "bare-fanout": Spec(
        "gunicorn", "bench.apps.bare_fanout:app", "D", "plain WSGI, a gevent Queue per subscriber"
    ),
    "flask-plain-fanout": Spec(
        "gunicorn",
        "bench.apps.flask_plain:app",
        "D",
        "the hand-written Flask loop: a gevent Queue per client, Response(generator)",
    ),
    "evstream-memory": Spec(
        "gunicorn", "bench.apps.evstream:app", "D", "sse.subscribe/publish, memory:// broker"
    ),
    "evstream-redis": Spec(
        "gunicorn",
        "bench.apps.evstream:app",
        "D",
        "sse.subscribe/publish, redis:// broker (redis-server on the server core)",
        broker="redis",
    ),
}
DEFAULT_SERVERS = tuple(SERVERS)
SCENARIOS = ("A", "B", "C", "D")
#: The row every other row of a scenario is compared with.
BASELINES = {"A": "bare", "B": "bare", "C": "bare", "D": "bare-fanout"}
BASELINE = "bare"
#: The rows whose targets the report checks, per scenario.
EVSTREAM_ROWS = {
    "A": ("evstream", "evstream-sub"),
    "B": ("evstream", "evstream-str", "evstream-prebuilt"),
    "C": ("evstream",),
}


def servers_for(scenario: str, selected: t.Iterable[str]) -> list[str]:
    """The selected rows that take part in ``scenario``, in the given order."""
    return [n for n in selected if scenario in SERVERS[n].scenarios]


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
#: Added to every gunicorn command: the bench's gc.freeze() config (see
#: bench/gc_freeze.py), unless --no-gc-freeze.
GC_FREEZE: list[str] = []


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
        self,
        name: str,
        *,
        heartbeat: float,
        core: str | None,
        logdir: Path,
        tag: str,
        redis_server: str = "/usr/bin/redis-server",
    ) -> None:
        self.name = name
        self.spec = SERVERS[name]
        self.kind, self.target = self.spec.kind, self.spec.target
        self.tokens_query = self.spec.tokens_query
        self.heartbeat = heartbeat
        self.core = core
        self.port = free_port()
        self.log_path = logdir / f"{name}-{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: the process that serves the connections (gunicorn's worker)
        self.pid = 0
        self.redis: RedisServer | None = None
        if self.spec.broker == "redis":
            self.redis = RedisServer(redis_server, core=core, log_path=logdir / f"redis-{tag}.log")

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
                *GC_FREEZE,
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
        env.pop("BENCH_BROKER_URL", None)
        if self.redis is not None:
            self.redis.start()
            env["BENCH_BROKER_URL"] = f"redis://127.0.0.1:{self.redis.port}/0"
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
        try:
            self._stop()
        finally:
            if self.redis is not None:
                self.redis.stop()

    def _stop(self) -> None:
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


class RedisServer:
    """A throw-away redis-server on a free port (no persistence), pinned to
    the server core, for the ``evstream-redis`` row."""

    def __init__(self, binary: str, *, core: str | None, log_path: Path) -> None:
        self.binary = binary
        self.core = core
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.port = free_port()
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            pin(self.core)
            + [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--logfile",
                "",
            ],  # fmt: skip
            cwd=ROOT,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in {timeout} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def redis_server_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "-"
    for word in out.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return out.stdout.strip()[:40] or "-"


def _show_progress(line: str) -> None:
    if line.startswith('{"progress_fanout"'):
        lv = json.loads(line)["progress_fanout"]
        log(f"    {lv['n']:>6} subscribers: held {lv['held']}, published the level's events")
        return
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
            "--path", srv.spec.idle_path,
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


def scenario_d(srv: Server, cfg: argparse.Namespace) -> dict[str, t.Any]:
    levels = cfg.fanout_levels
    per_event = cfg.fanout_interval + cfg.fanout_event_timeout
    budget = (
        sum(n / cfg.open_rate + cfg.open_timeout + cfg.settle + 1 for n in levels)
        + len(levels) * cfg.fanout_events * per_event
        + 60
    )
    res = run_client(
        [
            "fanout",
            "--port", str(srv.port),
            "--path", "/bcast",
            "--pub-path", "/publish",
            "--levels", ",".join(map(str, levels)),
            "--events", str(cfg.fanout_events),
            "--interval", str(cfg.fanout_interval),
            "--event-timeout", str(cfg.fanout_event_timeout),
            "--rate", str(cfg.open_rate),
            "--open-timeout", str(cfg.open_timeout),
            "--settle", str(cfg.settle),
            "--rss-pid", str(srv.pid),
            "--cpu-pid", str(srv.pid),
        ],
        core=cfg.client_core,
        timeout=budget,
    )  # fmt: skip
    res["server_alive"] = srv.alive()
    return res


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
        "`-k gevent -w 1 --worker-connections 20000`"
        + (
            ", the worker freezes what it loaded (gc.freeze(), bench/gc_freeze.py)"
            if cfg.get("gc_freeze", False)
            else ", no gc.freeze()"
        )
        + f"; uvicorn: 1 process, {env['uvicorn_stack']}."
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
    w(
        "Cells: median over reps (min–max). Ratios: median / median of `bare` "
        "(in D, of `bare-fanout`)."
    )
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
            for name in servers_for("A", servers):
                reps = [
                    r for r in runs["A"].get(name, []) if "levels" in r and len(r["levels"]) > li
                ]
                lv = [r["levels"][li] for r in reps]
                kib = summary([x["kib_per_stream"] for x in lv])
                held = summary([x["held"] for x in lv])
                p50 = summary([x["ttfb_ms_p50"] for x in lv])
                p99 = summary([x["ttfb_ms_p99"] for x in lv])
                opened = summary([x["open_seconds"] for x in lv])
                if name == BASELINES["A"]:
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
        for name in servers_for("A", servers):
            reps = [r for r in runs["A"].get(name, []) if "hold" in r]
            hd = [r["hold"] for r in reps]
            kib = summary([x["kib_per_stream"] for x in hd])
            held = summary([x["held"] for x in hd])
            beat = summary([x["heartbeat_seen"] for x in hd])
            if name == BASELINES["A"]:
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
            for name in servers_for("B", servers):
                reps = runs[key].get(name, [])
                ok = [r for r in reps if "events_per_s" in r]
                eps = summary([r["events_per_s"] for r in ok])
                us = summary([r.get("server_us_per_event") for r in ok])
                scpu = summary([r.get("server_cpu_share") for r in ok])
                ccpu = summary([r.get("client_cpu_share") for r in ok])
                if name == BASELINES["B"]:
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
        for name in servers_for("C", servers):
            reps = [r for r in runs["C"].get(name, []) if "late_ms" in r]
            p50 = summary([r["p50_ms"] for r in reps])
            p99 = summary([r["p99_ms"] for r in reps])
            mx = summary([r["max_ms"] for r in reps])
            bunched = sum(r["bunched_pairs"] for r in reps)
            worst = max((r["max_ms"] for r in reps if r["max_ms"] is not None), default=None)
            if name == BASELINES["C"]:
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
    if "D" in cfg["scenarios"]:
        _report_d(w, cfg, servers, runs, summ)
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


def _report_d(
    w: t.Callable[[str], None],
    cfg: dict[str, t.Any],
    servers: list[str],
    runs: dict[str, t.Any],
    summ: dict[str, t.Any],
) -> None:
    base_name = BASELINES["D"]
    # The baseline first, then the rows made for D, then the others.
    rows = sorted(
        servers_for("D", servers), key=lambda n: (n != base_name, SERVERS[n].scenarios != "D")
    )
    w(
        f"## D. Broadcast: one publisher, N subscribers on one worker; "
        f"{cfg['fanout_events']} events per level, {cfg['fanout_interval'] * 1000:g} ms apart "
        "(and each only after every subscriber got the previous one); "
        "latency = arrival at a subscriber − server's time.time() before the publish call"
    )
    w("")
    w(
        "| subscribers | server | held | KiB / idle subscriber | × bare | p50 ms | p99 ms | "
        "× bare (p99) | last subscriber ms (median over events) | × bare | worst last ms | "
        "delivered | server CPU µs / delivery |"
    )
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summ["D"] = {}
    for li, n in enumerate(cfg["fanout_levels"]):
        base: dict[str, t.Any] = {}
        for name in rows:
            all_reps = runs["D"].get(name, [])
            reps = [r for r in all_reps if "levels" in r and len(r["levels"]) > li]
            lv = [r["levels"][li] for r in reps]
            kib = summary([x["kib_per_sub"] for x in lv])
            held = summary([x["held"] for x in lv])
            p50 = summary([x["p50_ms"] for x in lv])
            p99 = summary([x["p99_ms"] for x in lv])
            last = summary([x["last_ms_median"] for x in lv])
            worst = max(
                (x["last_ms_max"] for x in lv if x["last_ms_max"] is not None), default=None
            )
            us = summary([x["server_us_per_delivery"] for x in lv])
            pairs = sum(x["pairs"] for x in lv)
            expected = n * cfg["fanout_events"] * len(all_reps)
            row = {"kib_per_sub": kib, "p50_ms": p50, "p99_ms": p99, "last_ms_median": last}
            if name == base_name:
                base = row
            summ["D"].setdefault(str(n), {})[name] = row | {
                "held": held,
                "worst_last_ms": worst,
                "server_us_per_delivery": us,
                "pairs": pairs,
                "expected_pairs": expected,
            }
            held_txt = (
                "-" if not held else f"{held['min']:.0f}/{n}" + (" ✓" if held["min"] == n else " ✗")
            )
            errs = sorted({k for x in lv for k in x.get("errors", {})})
            if errs:
                held_txt += f" ({', '.join(errs)[:40]})"
            cells = [
                f"{n:,}",
                name,
                held_txt,
                cell(kib),
                ratio(kib, base.get("kib_per_sub")),
                cell(p50),
                cell(p99),
                ratio(p99, base.get("p99_ms")),
                cell(last),
                ratio(last, base.get("last_ms_median")),
                fmt(worst),
                f"{pairs:,}/{expected:,}" + (" ✓" if pairs == expected else " ✗"),
                cell(us),
            ]
            w("| " + " | ".join(cells) + " |")
    alive = {name: all(r.get("server_alive") for r in runs["D"].get(name, [])) for name in rows}
    dead = [name for name, ok in alive.items() if not ok]
    w("")
    if dead:
        w(f"Worker not alive at the end (or a rep failed): {', '.join(dead)}.")
    for name in rows:
        errs = [r.get("error") for r in runs["D"].get(name, []) if "error" in r]
        if errs:
            w(f"\n*{name}*: {len(errs)} rep(s) failed: {errs[0]}")
    w(
        "`held`: subscribers open with a first byte before the level's events (worst rep). "
        "`KiB / idle subscriber`: (worker VmRSS with N subscribers − VmRSS with the warm-up "
        "subscriber) / N, read before the level's events. p50/p99 over every (event, "
        "subscriber) pair of a rep; `last subscriber`: per event, the latency of the last "
        "subscriber to get it, median over the level's events; `worst last`: the largest over "
        "all reps. `server CPU µs / delivery`: the worker's CPU time during the level's events "
        "/ pairs delivered (for evstream-redis, redis-server's CPU is not included)."
    )
    w("")


def _targets(
    cfg: dict[str, t.Any], summ: dict[str, t.Any], runs: dict[str, t.Any]
) -> list[tuple[str, str, bool]]:
    """evstream's targets: memory/stream <= 1.25x bare, events/s >= 1.5x bare,
    paced events within 5 ms, broadcast latency and memory near bare-fanout."""
    out: list[tuple[str, str, bool]] = []
    base = BASELINES["A"]
    for ev in EVSTREAM_ROWS["A"]:
        for n, by in summ.get("A", {}).items():
            e, b = (
                med(by.get(ev, {}).get("kib_per_stream")),
                med(by.get(base, {}).get("kib_per_stream")),
            )
            if e is not None and b:
                label = f"{int(n):,} open streams" if n != "hold" else "all streams after the hold"
                out.append(
                    (
                        f"A. `{ev}` memory per idle stream <= 1.25x bare, {label}",
                        f"{e:.1f} vs {b:.1f} KiB = {e / b:.2f}x",
                        e / b <= 1.25,
                    )
                )
    base = BASELINES["B"]
    for ev in EVSTREAM_ROWS["B"]:
        for key, label in (("B1", "one stream"), ("B2", f"{cfg['streams']} streams")):
            by = summ.get("B", {}).get(key, {})
            e = med(by.get(ev, {}).get("events_per_s"))
            b = med(by.get(base, {}).get("events_per_s"))
            if e is not None and b:
                out.append(
                    (
                        f"B. `{ev}` events/s >= 1.5x bare, {label}",
                        f"{e:,.0f} vs {b:,.0f} = {e / b:.2f}x",
                        e / b >= 1.5,
                    )
                )
    for ev in EVSTREAM_ROWS["C"]:
        reps = [r for r in runs.get("C", {}).get(ev, []) if "late_ms" in r]
        if reps:
            worst = max(r["max_ms"] for r in reps)
            bunched = sum(r["bunched_pairs"] for r in reps)
            got = sum(r["events"] for r in reps)
            exp = cfg["paced_n"] * len(runs["C"][ev])
            out.append(
                (
                    f"C. `{ev}` every paced event within 5 ms, none bunched",
                    f"worst {worst:.2f} ms, {bunched} bunched pairs, {got}/{exp} events",
                    worst <= 5 and bunched == 0 and got == exp,
                )
            )
    base = BASELINES["D"]
    for n, by in summ.get("D", {}).items():
        b = by.get(base)
        if not b:
            continue
        label = f"{int(n):,} subscribers"
        plain = by.get("flask-plain-fanout")
        for ev, limit_last, limit_p99 in (
            ("evstream-memory", 1.25, 1.5),
            ("evstream-redis", 1.25, 1.5),
        ):
            e = by.get(ev)
            if not e:
                continue
            complete = e.get("pairs") == e.get("expected_pairs")
            # Not slower than the loop users write by hand, in the same run.
            for key, what in (
                ("last_ms_median", "time to the last subscriber"),
                ("p99_ms", "p99 publish → receipt"),
                ("server_us_per_delivery", "server CPU per delivery"),
            ):
                ev_v, p_v = med(e.get(key)), med((plain or {}).get(key))
                if ev_v is None or not p_v:
                    continue
                out.append(
                    (
                        f"D. `{ev}` {what} <= flask-plain-fanout, {label}",
                        f"{ev_v:.1f} vs {p_v:.1f} = {ev_v / p_v:.2f}x"
                        + ("" if complete else " (events missing)"),
                        ev_v <= p_v and complete,
                    )
                )
            for key, what, limit, unit in (
                (
                    "last_ms_median",
                    "time to the last subscriber (median over events)",
                    limit_last,
                    "ms",
                ),
                ("p99_ms", "p99 publish → receipt", limit_p99, "ms"),
                ("kib_per_sub", "memory per idle subscriber", 1.25, "KiB"),
            ):
                ev_v, b_v = med(e.get(key)), med(b.get(key))
                if ev_v is None or not b_v:
                    continue
                complete = e.get("pairs") == e.get("expected_pairs") or key == "kib_per_sub"
                out.append(
                    (
                        f"D. `{ev}` {what} <= {limit:g}x {base}, {label}",
                        f"{ev_v:.1f} vs {b_v:.1f} {unit} = {ev_v / b_v:.2f}x"
                        + ("" if complete else " (events missing)"),
                        ev_v / b_v <= limit and complete,
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
        "redis",
        "orjson",
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
    p.add_argument("--scenarios", default="A,B,C,D", help="comma list of A, B, C, D (default all)")
    p.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list of {', '.join(SERVERS)} (default all); each runs only in the "
        "scenarios it is for (--list)",
    )
    p.add_argument("--list", action="store_true", help="list the servers and their scenarios")
    p.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    p.add_argument("--levels", help="A: open-stream counts, comma list (default 1000,5000,10000)")
    p.add_argument(
        "--open-rate", type=float, help="A: connections opened per second (default 2000)"
    )
    p.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gunicorn servers freeze what their worker loaded, as flask_evstream.gunicorn_conf"
        " does (default; --no-gc-freeze: not)",
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
    p.add_argument("--fanout-levels", help="D: subscriber counts, comma list (default 1000,5000)")
    p.add_argument("--fanout-events", type=int, help="D: events per level (default 20)")
    p.add_argument(
        "--fanout-interval", type=float, default=0.2, help="D: seconds between publishes"
    )
    p.add_argument(
        "--fanout-event-timeout",
        type=float,
        default=5.0,
        help="D: seconds to wait for an event to reach every subscriber",
    )
    p.add_argument("--redis-server", default="/usr/bin/redis-server", help="D: redis-server binary")
    p.add_argument("--server-core", default="0", help="CPU for servers ('' = no pinning)")
    p.add_argument("--client-core", default="1", help="CPU for the client ('' = no pinning)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the client-ceiling check")
    p.add_argument("--out", default=str(BENCH / "results"), help="where to write results")
    a = p.parse_args(argv)
    if a.list:
        for name, spec in SERVERS.items():
            print(f"{name:18} {spec.scenarios:5} {spec.what}")
        p.exit()
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
    a.fanout_levels = [
        int(x) for x in (a.fanout_levels or ("200,1000" if q else "1000,5000")).split(",")
    ]
    a.fanout_events = a.fanout_events or (5 if q else 20)
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
    most = max(a.levels + a.fanout_levels)
    if most + 64 > raise_nofile():
        p.error(f"open-file limit {raise_nofile()} is too low for {most} streams")
    if (
        "D" in a.scenarios
        and "evstream-redis" in a.servers
        and not os.access(a.redis_server, os.X_OK)
    ):
        p.error(f"no redis-server at {a.redis_server} (--redis-server, or drop evstream-redis)")
    for s in a.scenarios:
        if not servers_for(s, a.servers):
            p.error(f"no server of --servers takes part in scenario {s} (see --list)")
    a.server_core = a.server_core or None
    a.client_core = a.client_core or None
    return a


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    raise_nofile()
    NO_CONTROL_SOCKET[:] = _gunicorn_flags()
    GC_FREEZE[:] = ["-c", "python:bench.gc_freeze"] if cfg.gc_freeze else []
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
            "redis_server": redis_server_version(cfg.redis_server),
        },
        "runs": {"A": {}, "B1": {}, "B2": {}, "C": {}, "D": {}},
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
            for name in servers_for("A", order):
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
        bc = [n for n in order if {"B", "C"} & set(cfg.scenarios) & set(SERVERS[n].scenarios)]
        if bc:
            for name in bc:
                scns = set(cfg.scenarios) & set(SERVERS[name].scenarios)
                srv = Server(
                    name, heartbeat=cfg.heartbeat, core=cfg.server_core, logdir=logdir, tag="BC"
                )
                try:
                    srv.start()
                except Exception as e:
                    log(f"rep {rep + 1}/{cfg.reps} {name}: server failed to start: {e}")
                    for key in ("C", "B1", "B2"):
                        if key[0] in scns:
                            data["runs"][key].setdefault(name, []).append({"error": str(e)})
                    srv.stop()
                    continue
                try:
                    if "C" in scns:
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
                    if "B" in scns:
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
        if "D" in cfg.scenarios:
            for name in servers_for("D", order):
                log(f"rep {rep + 1}/{cfg.reps} D {name}: subscribers {cfg.fanout_levels}")
                srv = Server(
                    name,
                    heartbeat=cfg.heartbeat,
                    core=cfg.server_core,
                    logdir=logdir,
                    tag="D",
                    redis_server=cfg.redis_server,
                )
                try:
                    srv.start()
                    res = scenario_d(srv, cfg)
                except Exception as e:
                    res = {"error": f"{type(e).__name__}: {e}"}
                finally:
                    srv.stop()
                if "error" in res:
                    log(f"    FAILED: {res['error']} {res.get('stderr', '')[-500:]}")
                else:
                    for lv in res["levels"]:
                        log(
                            f"    {lv['n']:>6}: {fmt(lv['kib_per_sub'])} KiB/sub, latency p50 "
                            f"{fmt(lv['p50_ms'])} p99 {fmt(lv['p99_ms'])} ms, last subscriber "
                            f"median {fmt(lv['last_ms_median'])} ms, "
                            f"{lv['pairs']}/{lv['expected_pairs']} delivered"
                        )
                data["runs"]["D"].setdefault(name, []).append(res)
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
