"""flask_evstream.gunicorn_conf under gunicorn itself: ``--check-config``,
and ``--preload`` with the Redis broker (each worker connects after the fork)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t

import pytest

from .conftest import ROOT, Server
from .redis_server import RedisServer
from .sockets import RawStream
from .test_broadcast_server import publish, read_events

pytestmark = pytest.mark.server

APP = "tests.apps.broadcast:app"
#: Bounds on finding a stream on each of the two workers: connections
#: opened, and seconds. A worker still booting (its post_worker_init
#: collects and freezes) leaves every connection to the other one, often
#: for the first 20 or so on a quiet machine, so the bound is time too.
MAX_TRIES = 400
FIND_WITHIN = 30.0


def check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVSTREAM_")}
    return subprocess.run(
        [
            sys.executable, "-m", "gunicorn", "--check-config",
            "-c", "python:flask_evstream.gunicorn_conf", "tests.apps.streams:app",
        ],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_check_config_accepts_the_config() -> None:
    result = check_config({})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("EVSTREAM_WORKERS", "zero", "a positive integer"),
        ("EVSTREAM_CONNECTIONS", "-5", "a positive integer"),
        ("EVSTREAM_GRACEFUL_TIMEOUT", "0", "a positive integer"),
        ("EVSTREAM_GC_FREEZE", "yes", "0 or 1"),
    ],
)
def test_check_config_rejects_a_bad_value(name: str, value: str, allowed: str) -> None:
    result = check_config({name: value})
    assert result.returncode != 0
    assert f"{name} must be {allowed}, got {value!r}" in result.stderr


def open_on_both_workers(server: Server, last_id: str) -> dict[int, RawStream]:
    """A stream of ``/sub-pid`` on each of the two workers, by worker pid.

    gunicorn's workers take turns at accepting as they please, so this opens
    streams until both have one, closing each further one on a worker that
    already has its stream; every stream is closed if it fails."""
    by_pid: dict[int, RawStream] = {}
    deadline = time.monotonic() + FIND_WITHIN
    tries = 0
    try:
        while len(by_pid) < 2 and tries < MAX_TRIES and time.monotonic() < deadline:
            tries += 1
            stream = RawStream(server.url, "/sub-pid?c=room", headers={"Last-Event-ID": last_id})
            try:
                block = stream.read_until(b"\n\n").decode()
                while block.startswith(":"):  # the opening comment, heartbeats
                    block = stream.read_until(b"\n\n").decode()
                assert block.startswith("event: pid\ndata: "), block
                pid = int(block.split("data: ")[1])
            except BaseException:
                stream.close()
                raise
            if pid in by_pid:
                stream.close()
                time.sleep(0.01)  # let a booting worker get to its accept
            else:
                by_pid[pid] = stream
        if len(by_pid) < 2:
            raise AssertionError(
                f"{tries} connections in {FIND_WITHIN - (deadline - time.monotonic()):.1f} s"
                f" all went to worker {list(by_pid)}; the master's children: {server.workers()}"
            )
    except BaseException:
        for stream in by_pid.values():
            stream.close()
        raise
    return by_pid


@pytest.mark.parametrize("master_uses_redis", [False, True], ids=["lazy", "publish-at-import"])
def test_preload_with_redis_connects_in_each_worker(
    start_server: t.Callable[..., Server], redis_server: RedisServer, master_uses_redis: bool
) -> None:
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url, "GUNICORN_CMD_ARGS": "--preload"}
    if master_uses_redis:
        env["TEST_PUBLISH_AT_IMPORT"] = "1"
    server = start_server(APP, workers=2, env=env)
    master = server.proc.pid
    # The app was loaded in the master (that is what --preload does) ...
    assert server.stats()["loaded_in"] == master
    # ... and its broker connected to Redis only if the app used it there.
    before = redis_server.clients("evstream")
    assert [c["name"] for c in before] == (["evstream"] if master_uses_redis else [])

    first = publish(server, "room", "before")
    by_pid = open_on_both_workers(server, first)
    try:
        assert sorted(by_pid) == server.workers()
        assert master not in by_pid
        ids = [publish(server, "room", {"i": i}) for i in range(5)]
        assert [int(i) for i in ids] == sorted(int(i) for i in ids)
        for stream in by_pid.values():
            assert read_events(stream, 5) == [(ids[i], f'{{"i":{i}}}') for i in range(5)]

        # One reader per worker, each its own connection; none in the master.
        readers = redis_server.clients("evstream-reader")
        assert len(readers) == 2, readers
        # The workers publish through pools of their own: the master's
        # connection, if it made one, is still there and the workers' are new.
        pools = {c["id"] for c in redis_server.clients("evstream") if c["name"] == "evstream"}
        assert {c["id"] for c in before} <= pools
        assert pools - {c["id"] for c in before}
    finally:
        for stream in by_pid.values():
            stream.close()
