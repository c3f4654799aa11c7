"""The resumable soak: 2 gunicorn servers x 2 gevent workers on one Redis,
200 concurrent answers whose readers drop and resume at random on either
server for 60 s (tests/scripts/resumable_soak.py, loopback only, bounded in
time): every reader ends with exactly the produced events, each POST ran
once, every generator's finally ran, and once the resume TTL has passed no
log is left in Redis and no producer runs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import typing as t

import httpx
import pytest

from .conftest import ROOT, Server, cpu_seconds, machine_busy
from .redis_server import RedisServer

pytestmark = [pytest.mark.server, pytest.mark.slow]

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
LANES = 200
TTL = 30


#: What INFO says about connections Redis closed or refused, for a failure's report.
CLOSES = (
    "rejected_connections",
    "client_query_buffer_limit_disconnections",
    "client_output_buffer_limit_disconnections",
    "connected_clients",
    "maxclients",
)


#: Lines of a verbose Redis log left out of a failure's report.
USUAL = (" - Accepted ", " - Client closed connection", " clients connected (", " keys (")


@pytest.fixture
def redis_server(tmp_path: t.Any) -> t.Iterator[RedisServer]:
    # verbose: Redis logs each connection it closes, and why (a protocol
    # error, for one), for a failure's report.
    server = RedisServer(tmp_path, extra=["--loglevel", "verbose"])
    yield server
    server.stop()


def redis_report(server: RedisServer) -> dict[str, t.Any]:
    """What Redis says about the connections it closed or refused."""
    info = {**server.admin.info("stats"), **server.admin.info("clients")}
    info["maxclients"] = server.admin.config_get("maxclients")["maxclients"]
    unusual = [
        line
        for line in server.log().splitlines()
        # not the connections' comings and goings, nor verbose's counts every 5 s
        if not any(usual in line for usual in USUAL)
    ]
    return {"info": {k: info.get(k) for k in CLOSES}, "log": unusual[-40:]}


def test_resumable_soak(start_server: t.Callable[..., Server], redis_server: RedisServer) -> None:
    env = {
        "EVSTREAM_BROKER_URL": redis_server.url,
        "TEST_REDIS_URL": redis_server.url,
        "TEST_RESUME_TTL": str(TTL),
        "TEST_HEARTBEAT": "1",
    }
    servers = [start_server("tests.apps.resumable:app", env=env, workers=2) for _ in range(2)]
    # The CPU the soak used, against what the machine had (other jobs
    # included): a figure for the report, not a bound.
    assert redis_server.proc is not None
    pids = {"redis": [redis_server.proc.pid], "workers": [p for s in servers for p in s.workers()]}
    cpu_before = {name: sum(map(cpu_seconds, group)) for name, group in pids.items()}
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = machine_busy()
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/scripts/resumable_soak.py"), str(SECONDS), str(LANES)]
        + [s.url for s in servers],
        capture_output=True,
        text=True,
        timeout=SECONDS + 300,  # the client's own bound is SECONDS + 240
        check=True,
    )
    window = time.monotonic() - began
    busy_after = machine_busy()
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = {
        name: round((sum(map(cpu_seconds, group)) - cpu_before[name]) / window, 2)
        for name, group in pids.items()
    }
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    cores["client"] = round(client / window, 2)
    busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    stats["cores_used"] = cores  # CPU seconds per second of the soak
    stats["machine_busy"] = round(busy, 3)  # of all its cores, whoever used them
    stats["machine_cores"] = os.cpu_count()
    # What the workers logged beyond gunicorn's own lines, for a failure's report.
    logged = [line for s in servers for line in s.log().splitlines() if "[INFO]" not in line]
    assert stats["errors"] == [] and stats["bad"] == [], (
        stats,
        logged[-40:],
        redis_report(redis_server),
    )
    assert stats["answers"] >= LANES and stats["drops"] > stats["answers"], stats
    assert int(redis_server.admin.get("test:posts") or 0) == stats["answers"]
    deadline = time.monotonic() + 30
    while redis_server.admin.llen("test:finally") < stats["answers"]:
        assert time.monotonic() < deadline, redis_server.admin.llen("test:finally")
        time.sleep(0.1)
    # Nothing left once the TTL has passed: logs, producers, readers.
    deadline = time.monotonic() + TTL + 30
    while redis_server.admin.keys("evstream:rs:ch:*"):
        assert time.monotonic() < deadline, len(redis_server.admin.keys("evstream:rs:ch:*"))
        time.sleep(0.2)
    for server in servers:
        for _ in range(8):  # /stats lands on either worker
            stats_now = httpx.get(f"{server.url}/stats", timeout=10).json()
            assert stats_now["producers"] == 0 and stats_now["live"] <= 1, stats_now
        assert "Traceback" not in server.log(), server.log()[-3000:]
    report = {**stats, "seconds": SECONDS, "lanes": LANES, "elapsed": time.monotonic() - began}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "resumable_soak.json").write_text(json.dumps(report, indent=2))
