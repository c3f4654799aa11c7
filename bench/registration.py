"""How fast one worker registers new subscribers, memory broker against Redis.

A burst of ``--subscribers`` subscriptions, each on a channel of its own,
opened at once by as many greenlets in one gevent process (what a worker
sees when clients reconnect after a deploy): the seconds until all are
registered and have read their history, and each one's wait (median and
most). Each channel is new to the process, so with Redis a registration
reads the id counter and wakes the reader (``RedisBroker.channels_added``).
Registrations hold the broker's registration lock; the subscribers that
arrive meanwhile wait in its queue and are registered together, with one
``channels_added`` (``Broker.hub_add``).

The parent starts a redis-server (``--appendonly no``) and runs each broker
in a child process of its own (gevent patches at start), alternating, for
``--reps`` reps; prints a markdown table with the ratio to the memory broker
and writes ``bench/results/registration.json``::

    .venv/bin/python bench/registration.py                  # 200 and 1000, 5 reps
    .venv/bin/python bench/registration.py --subscribers 500 --reps 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def child(url: str, n: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from flask_evstream.brokers import broker_from_url
    from flask_evstream.channels import Subscription

    broker = broker_from_url(url, history=1000)
    # A first subscriber: the reader runs and waits in XREAD, as in a worker.
    warm = Subscription(broker, ("warm",), after=None, last_event_id=None, queue_size=8)
    warm.wait_started(0)
    gevent.sleep(0.2)
    waits: list[float] = []
    subs: list[Subscription] = []

    def one(i: int) -> None:
        began = time.monotonic()
        sub = Subscription(broker, (f"c{i}",), after=0, last_event_id=None, queue_size=8)
        sub.wait_started(0)
        waits.append(time.monotonic() - began)
        subs.append(sub)

    began = time.monotonic()
    gevent.joinall([gevent.spawn(one, i) for i in range(n)], timeout=120)
    wall = time.monotonic() - began
    assert len(waits) == n, f"{len(waits)} of {n} registered within 120 s"
    for sub in subs + [warm]:
        sub.close()
    broker.close()
    waits.sort()
    print(json.dumps({"wall": wall, "p50": waits[n // 2], "max": waits[-1]}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="200,1000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server"
    )
    args = parser.parse_args()
    levels = [int(v) for v in args.subscribers.split(",")]
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-reg-")
    redis = subprocess.Popen(
        [args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    brokers = {"memory": "memory://", "redis": f"redis://127.0.0.1:{port}/0"}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {
        b: {n: [] for n in levels} for b in brokers
    }
    try:
        time.sleep(0.5)
        for rep in range(args.reps):
            for n in levels:
                for name in sorted(brokers, reverse=bool(rep % 2)):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", brokers[name], str(n)],
                        capture_output=True,
                        text=True,
                        check=True,
                        cwd=ROOT,
                        timeout=300,
                    )
                    runs[name][n].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"rep {rep + 1} {name} {n}: {runs[name][n][-1]}", file=sys.stderr)
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {
        b: {n: {k: statistics.median(r[k] for r in rs) for k in ("wall", "p50", "max")}
            for n, rs in per.items()}
        for b, per in runs.items()
    }  # fmt: skip
    print(
        "| subscribers | broker | all registered (s) | per subscriber (ms)"
        " | wait p50 / max (ms) | vs memory |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for n in levels:
        for b in brokers:
            m = med[b][n]
            ratio = m["wall"] / med["memory"][n]["wall"]
            print(
                f"| {n:,} | {b} | {m['wall']:.3f} | {m['wall'] / n * 1000:.2f} |"
                f" {m['p50'] * 1000:.0f} / {m['max'] * 1000:.0f} | {ratio:.1f}x |"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "registration.json").write_text(
        json.dumps({"reps": args.reps, "median": med, "runs": runs}, indent=2)
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
