"""Fixtures: an in-process app and client, and a real gunicorn in a subprocess."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from flask import Flask

from flask_evstream import EvStream

from .processes import end

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Load tests hold thousands of sockets; the hard limit here is 20,000.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture
def app() -> Flask:
    app = Flask("test_app")
    app.config.update(TESTING=True, SECRET_KEY="test", EVSTREAM_HEARTBEAT=0.2)
    EvStream(app)
    return app


@pytest.fixture
def client(app: Flask) -> t.Any:
    return app.test_client()


@pytest.fixture(autouse=True)
def _no_leaked_streams() -> t.Iterator[None]:
    """Every test must leave no stream open in this process."""
    from flask_evstream import live_streams

    before = live_streams()
    yield
    deadline = time.monotonic() + 5
    while live_streams() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live_streams() == before, "a test left a stream open"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (None if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(status.split("\nPPid:", 1)[1].split()[0])


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """Seconds all cores were busy and in all since boot (/proc/stat), summed
    over cores: the busy share of a window is the ratio of two differences."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # up to steal; guest time is counted in user
    return (total - idle) / os.sysconf("SC_CLK_TCK"), total / os.sysconf("SC_CLK_TCK")


class Server:
    """A gunicorn master started with flask_evstream.gunicorn_conf."""

    def __init__(
        self,
        app: str,
        *,
        worker: str = "gevent",
        workers: int = 1,
        env: dict[str, str] | None = None,
        tmp: Path,
        python: str = sys.executable,
        cwd: Path = ROOT,
        threads: int = 16,
        ready_path: str = "/stats",
        scheme: str = "http",
        verify: t.Any = True,
    ) -> None:
        self.ready_path = ready_path
        self.verify = verify  # httpx's, for an https server (gunicorn's --certfile)
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        cmd = [
            python,
            "-m",
            "gunicorn",
            "-c",
            "python:flask_evstream.gunicorn_conf",
            "--worker-class",
            worker,
            "--error-logfile",
            "-",
            app,
        ]
        if worker == "gthread":
            cmd[-1:-1] = ["--threads", str(threads)]
        full_env = {
            **os.environ,
            "EVSTREAM_BIND": f"127.0.0.1:{self.port}",
            "EVSTREAM_WORKERS": str(workers),
            "PYTHONPATH": str(cwd),
            **(env or {}),
        }
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # no process or log file left behind
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(self.url + self.ready_path, timeout=2, verify=self.verify)
                # free_port() lets the port go before gunicorn binds it, so
                # another test process may have taken it: the answer counts
                # only once this master says it listens there.
                if ready.status_code == 200 and f"127.0.0.1:{self.port} (" in self.log():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer within 30 s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The pids of this master's children (its workers), from /proc."""
        pid = self.proc.pid
        return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())

    def stats(self) -> dict[str, t.Any]:
        stats: dict[str, t.Any] = httpx.get(
            self.url + "/stats", timeout=10, verify=self.verify
        ).json()
        # One of this master's workers answered, not another test process's
        # server on a port it took (free_port lets the port go first).
        parent = parent_pid(stats["pid"]) if "pid" in stats else None
        if parent is not None and parent != self.proc.pid:
            raise AssertionError(
                f"/stats of {self.url} came from pid {stats['pid']}, whose parent is"
                f" {parent}, not this gunicorn master {self.proc.pid}"
            )
        return stats

    def wait_stats(
        self, check: t.Callable[[dict[str, t.Any]], bool], timeout: float
    ) -> dict[str, t.Any]:
        """Poll /stats until ``check`` holds; return the last stats either way."""
        deadline = time.monotonic() + timeout
        stats = self.stats()
        while not check(stats) and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = self.stats()
        return stats

    def stop(self) -> None:
        end(self.proc, 30)
        self._log.close()


@pytest.fixture
def start_server(tmp_path: Path) -> t.Iterator[t.Callable[..., Server]]:
    servers: list[Server] = []

    def start(app: str = "tests.apps.streams:app", **kwargs: t.Any) -> Server:
        server = Server(app, tmp=tmp_path, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def gevent_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Server]:
    server = Server("tests.apps.streams:app", tmp=tmp_path_factory.mktemp("gunicorn"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[t.Any]:
    """A real redis-server for the module's tests (flush it where it matters)."""
    from .redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def browser() -> t.Iterator[t.Any]:
    """Headless Chromium (Debian's, driven by playwright), closed after the test."""
    from playwright.sync_api import sync_playwright

    from .test_browser import CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()
