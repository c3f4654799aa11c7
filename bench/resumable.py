"""The cost of ``resumable=True`` against a plain stream, in one run.

Starts a redis-server and two gunicorn servers (gevent, one worker each,
pinned to core 0): the app of ``bench/apps/resumable_app.py`` with the
memory broker and with Redis. The client (this process, core 1) reads, over
raw HTTP/1.0 on loopback:

* throughput: ``--tokens`` OpenAI-chunk-sized events as fast as the server
  makes them, plain vs resumable, events/s (median of ``--reps``);
* memory: ``--streams`` concurrent streams whose generator sleeps after one
  event, the worker's RSS growth per stream.

Prints a markdown table with ratios to the plain stream of the same server
(throughput: the median of the ratios of pairs run one after the other)
and writes ``bench/results/resumable.json``::

    .venv/bin/python bench/resumable.py             # 100,000 tokens, 3 reps, 200 streams
    .venv/bin/python bench/resumable.py --tokens 20000 --reps 1 --streams 50
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def start_gunicorn(port: int, broker: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_BROKER_URL": broker, "EVSTREAM_WORKERS": "1"}
    env["EVSTREAM_BIND"] = f"127.0.0.1:{port}"
    taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    cmd = [
        *taskset,
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:flask_evstream.gunicorn_conf",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "bench.apps.resumable_app:app",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_up(f"http://127.0.0.1:{port}/health")
    return proc


def read_stream(port: int, path: str) -> tuple[int, float]:
    """Read a stream to its end: (events, seconds from request to last byte)."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    elapsed = time.perf_counter() - began
    body = bytes(data).split(b"\r\n\r\n", 1)[1]
    return body.count(b"\ndata: ") + body.startswith(b"data: "), elapsed


def stats(port: int) -> dict[str, t.Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return t.cast("dict[str, t.Any]", json.load(r))


def idle_memory(port: int, path: str, streams: int) -> float:
    """KiB of worker RSS per open stream whose generator sleeps."""
    before = stats(port)["rss_kib"]
    socks = []
    for _ in range(streams):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    for s in socks:
        got = b""
        while b"hello" not in got:
            got += s.recv(65536)
    time.sleep(1.0)
    after = stats(port)["rss_kib"]
    for s in socks:
        s.close()
    return (after - before) / streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument(
        "--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server"
    )
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="bench-resumable-"))
    redis_port = free_port()
    redis = subprocess.Popen(
        [args.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    servers = {}
    procs = [redis]
    try:
        time.sleep(0.3)
        for name, broker in (
            ("memory", "memory://"),
            ("redis", f"redis://127.0.0.1:{redis_port}/0"),
        ):
            port = free_port()
            procs.append(start_gunicorn(port, broker, tmp / f"{name}.log"))
            servers[name] = port
        results: dict[str, t.Any] = {
            "tokens": args.tokens,
            "reps": args.reps,
            "streams": args.streams,
        }
        for name, port in servers.items():
            # Plain and resumable alternate, so a slower moment of this
            # shared machine hits both; the ratio is the median of the pairs'.
            rates: dict[str, list[float]] = {"plain": [], "resumable": []}
            for _ in range(args.reps):
                for kind in ("plain", "resumable"):
                    events, seconds = read_stream(port, f"/{kind}?n={args.tokens}")
                    assert events == args.tokens, (name, kind, events)
                    rates[kind].append(events / seconds)
            for kind in ("plain", "resumable"):
                results[f"{name}/{kind}/events_per_s"] = statistics.median(rates[kind])
                results[f"{name}/{kind}/rates"] = rates[kind]
            results[f"{name}/ratio"] = statistics.median(
                r / p for p, r in zip(rates["plain"], rates["resumable"])
            )
            for kind in ("plain", "resumable"):
                results[f"{name}/{kind}/kib_per_stream"] = idle_memory(
                    port, f"/{kind}-idle", args.streams
                )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "resumable.json").write_text(json.dumps(results, indent=2))
        print(
            "| broker | plain events/s | resumable events/s | ratio | plain KiB/stream"
            " | resumable KiB/stream | ratio |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in servers:
            p, r = results[f"{name}/plain/events_per_s"], results[f"{name}/resumable/events_per_s"]
            ratio = results[f"{name}/ratio"]
            pm = results[f"{name}/plain/kib_per_stream"]
            rm = results[f"{name}/resumable/kib_per_stream"]
            print(
                f"| {name} | {p:,.0f} | {r:,.0f} | {ratio:.2f}x | {pm:.1f} | {rm:.1f}"
                f" | {rm / pm if pm > 0 else float('nan'):.2f}x |"
            )
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
