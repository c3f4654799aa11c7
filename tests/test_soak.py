"""The broadcast soak: 2 gunicorn servers x 2 gevent workers on one Redis,
1,000 subscribers on 50 channels reconnecting at random with their
Last-Event-ID to either server while 20 publishers publish for 60 s
(tests/scripts/soak.py, loopback only, bounded in time). Every subscriber's
sequence is exactly its channel's published sequence (or, after a gap event,
an increasing part of it), and the workers' memory and the Redis connections
come back to where they were after a warm-up round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

from .conftest import ROOT, Server
from .redis_server import RedisServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
SUBSCRIBERS, CHANNELS, PUBLISHERS = 1000, 50, 20


def worker_rss_kib(server: Server) -> dict[int, int]:
    out = subprocess.run(
        ["ps", "-o", "pid=,rss=", "--ppid", str(server.proc.pid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid): int(rss) for pid, rss in (line.split() for line in out.strip().splitlines())}


def run_client(phase: str, servers: list[Server]) -> dict[str, t.Any]:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/scripts/soak.py"),
            phase,
            str(SECONDS),
            str(SUBSCRIBERS),
            str(CHANNELS),
            str(PUBLISHERS),
            *[s.url for s in servers],
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def idle(servers: list[Server]) -> None:
    for server in servers:
        for _ in range(4):  # /stats lands on either worker: ask a few times
            stats = server.wait_stats(lambda s: s["subscriptions"] == 0 and s["live"] == 0, 30)
            assert (stats["subscriptions"], stats["live"]) == (0, 0), stats


def test_soak(start_server: t.Callable[..., Server], tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    try:
        env = {"EVSTREAM_BROKER_URL": redis.url, "TEST_HEARTBEAT": "2"}
        servers = [start_server(APP, env=env, workers=2) for _ in range(2)]
        warm = run_client("warmup", servers)
        assert all(s["statuses"] == [200] for s in warm["subscribers"])
        idle(servers)
        rss_before = {p: r for s in servers for p, r in worker_rss_kib(s).items()}
        connections_before = len(redis.clients("evstream"))

        result = run_client("soak", servers)
        assert result["failures"] == []
        published = result["published"]
        total = sum(len(ids) for ids in published.values())
        exact = 0
        for sub in result["subscribers"]:
            expected = sorted(published[sub["channel"]])  # responses come in any order
            assert sub["statuses"] == [200], sub["statuses"]
            if sub["gaps"] == 0:
                assert sub["ids"] == expected, (sub["channel"], sub["reconnects"])
                exact += 1
            else:  # history ran out: what came is in order, once, and ends at the end
                assert sub["ids"] == sorted(set(sub["ids"])) and set(sub["ids"]) <= set(expected)
                assert sub["ids"][-1] == expected[-1]
        reconnects = sum(s["reconnects"] for s in result["subscribers"])
        assert reconnects > SUBSCRIBERS  # they did reconnect, several times on average

        idle(servers)
        rss_after = {p: r for s in servers for p, r in worker_rss_kib(s).items()}
        connections_after = len(redis.clients("evstream"))
        report = {
            "published": total,
            "deliveries": sum(len(s["ids"]) for s in result["subscribers"]),
            "reconnects": reconnects,
            "exact": exact,
            "with_gap": SUBSCRIBERS - exact,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "redis_connections": [connections_before, connections_after],
            "seconds": round(result["seconds"], 1),
        }
        print("soak:", json.dumps(report))
        (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (ROOT / "bench" / "results" / "soak.json").write_text(json.dumps(report, indent=1))
        assert rss_after.keys() == rss_before.keys(), "a worker was restarted"
        for pid, before in rss_before.items():
            # Back to the warm level: the allocator may keep a little.
            assert rss_after[pid] <= before * 1.10 + 4096, (pid, before, rss_after[pid])
        assert connections_after <= connections_before, (connections_before, connections_after)
    finally:
        redis.stop()


APP = "tests.apps.broadcast:app"
