"""A real redis-server in a subprocess, on loopback, that tests can kill -9 and restart."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
import typing as t
from pathlib import Path

import redis
from redis.crc import key_slot

from .conftest import free_port
from .processes import end as end_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
#: Valkey (Debian's, from bookworm-backports on Debian 12): the Redis 7.2
#: fork, for what Redis 7.0 (Debian 12's redis-server) cannot show.
VALKEY_SERVER = shutil.which("valkey-server") or "/usr/bin/valkey-server"


class RedisServer:
    """``redis-server`` with an append-only file fsynced at every write.

    :meth:`kill` is ``kill -9``; :meth:`start` again uses the same port and
    directory, so the data comes back from the append-only file.
    """

    def __init__(
        self,
        tmp: Path,
        extra: t.Sequence[str] = (),
        port: int | None = None,
        binary: str = REDIS_SERVER,
    ) -> None:
        self.binary = binary
        self.extra = list(extra)
        self.port = port or free_port()
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
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", str(self.dir),
                "--logfile", str(self.log_path),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited:\n{self.log()}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if self.admin.ping():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"{self.binary} did not answer within 15 s:\n{self.log()}")

    def kill(self) -> None:
        """``kill -9`` the server and wait until it is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.admin.connection_pool.disconnect()

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc, 10)
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


REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 above) is free too:
    Redis wants the port at most 55535, below the kernel's ephemeral range."""
    for _ in range(1000):
        port = random.randrange(20000, 30000)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """A real Redis Cluster of three masters (no replicas) on loopback ports,
    each a :class:`RedisServer` with ``cluster-enabled yes``, joined by
    ``redis-cli --cluster create``. A node can be killed and started again
    (its ``nodes.conf`` and append-only file bring it back as it was)."""

    def __init__(self, tmp: Path, size: int = 3, binary: str = REDIS_SERVER) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for i in range(size):
                (tmp / f"node{i}").mkdir()
                self.nodes.append(
                    RedisServer(
                        tmp / f"node{i}",
                        [
                            "--cluster-enabled", "yes",
                            "--cluster-config-file", "nodes.conf",
                            "--cluster-node-timeout", "2000",
                            "--cluster-require-full-coverage", "no",
                        ],
                        port=cluster_port(),
                        binary=binary,
                    )
                )  # fmt: skip
            subprocess.run(
                [REDIS_CLI, "--cluster", "create"]
                + [f"127.0.0.1:{n.port}" for n in self.nodes]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        #: The URL of the whole cluster, naming one node.
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}/"

    def wait_ok(self, timeout: float = 30) -> None:
        """Wait until every node says the cluster is ok and sees every node
        connected, none failing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ok(n) for n in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not become ok in time")

    def _node_ok(self, node: RedisServer) -> bool:
        if node.proc is None:
            return False
        try:
            info = node.admin.execute_command("CLUSTER", "INFO")
            table = node.admin.execute_command("CLUSTER", "NODES").splitlines()
        except redis.RedisError:
            return False
        return (
            "cluster_state:ok" in info
            and len(table) == len(self.nodes)
            and all("fail" not in line.split()[2] and " connected" in line for line in table)
        )

    def node_of(self, key: str) -> int:
        """The index of the node that serves ``key``."""
        slot = key_slot(key.encode())
        for i, node in enumerate(self.nodes):
            for start, end in self._slots(node):
                if start <= slot <= end:
                    return i
        raise LookupError(slot)

    def _slots(self, node: RedisServer) -> list[tuple[int, int]]:
        for line in node.admin.execute_command("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                return [
                    (int(a), int(b or a))
                    for a, _, b in (r.partition("-") for r in fields[8:] if not r.startswith("["))
                ]
        return []

    def channel_on(self, node: int, name: str, prefix: str = "evstream") -> str:
        """A channel ``<name>-<k>`` whose keys are on node ``node``."""
        for k in range(10_000):
            channel = f"{name}-{k}"
            if self.node_of(f"{prefix}:{{{channel}}}:id") == node:
                return channel
        raise LookupError(node)

    def flushall(self) -> None:
        for node in self.nodes:
            node.admin.flushall()

    def clients(self, name_prefix: str) -> list[dict[str, str]]:
        return [c for n in self.nodes if n.proc is not None for c in n.clients(name_prefix)]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
