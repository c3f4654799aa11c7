"""A real redis-server in a subprocess, on loopback, that tests can kill -9 and restart."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from .conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """``redis-server`` with an append-only file fsynced at every write.

    :meth:`kill` is ``kill -9``; :meth:`start` again uses the same port and
    directory, so the data comes back from the append-only file.
    """

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = tmp / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = redis.Redis(
            host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5
        )
        self.start()

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", str(self.dir),
                "--logfile", str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if self.admin.ping():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within 15 s:\n{self.log()}")

    def kill(self) -> None:
        """``kill -9`` the server and wait until it is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.admin.connection_pool.disconnect()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self.admin.close()
        self.admin.connection_pool.disconnect()

    def clients(self, name_prefix: str) -> list[dict[str, str]]:
        """The connections named ``name_prefix...`` in ``CLIENT LIST``."""
        return [c for c in self.admin.client_list() if c["name"].startswith(name_prefix)]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
