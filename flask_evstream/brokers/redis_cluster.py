"""The Redis Cluster broker (also a Valkey cluster): Redis Streams spread over
the nodes of a cluster, announced by pub/sub.

Named by ``EVSTREAM_BROKER_URL=redis+cluster://host:port/`` (or
``rediss+cluster://`` for TLS; user and password as in ``redis://``): any
node of the cluster, or several separated by commas; the others are
discovered.

**Groups and ids.** A cluster runs a script or a multi-key command only on
keys of one hash slot, so there is no counter shared by every channel. The
channels that share a hash tag (``room:{42}:chat`` and ``room:{42}:typing``:
tag ``42``) form a *group*; a channel without a tag is a group of its own.
Each group has its own counter, ``<prefix>:{<group>}:id``, its clock and its
channels' streams, ``<prefix>:{<group>}:ch:<channel>``: all of a group's keys
are in one slot, so a publish is the same atomic script as on one server
(:mod:`flask_evstream.brokers.redis`). Ids increase across the channels of a
group, so one subscription may read several channels of one group (one
``Last-Event-ID`` is a position in each of them), and not channels of two
groups (:meth:`RedisClusterBroker.check_channels` says so, a 400 in a
request). A channel name holds at most one hash tag and no other braces.

A group's counter expires with its channels (twice ``EVSTREAM_CHANNEL_TTL``
after its last publish) and a new counter starts from the server's clock in
microseconds (ids like ``1796243466832001``), above every id the group gave
before, so ids never go back when a group's keys expire (nor when a
deployment moves from one server to a cluster). Explicit ids
(``publish(id=...)``) are taken as they come.

**The reader.** Each worker process has one reader: a greenlet under gevent,
a thread otherwise, on one connection of its own to any node (the next one
when that node goes away). It subscribes (classic ``SUBSCRIBE``) to
``<prefix>:n:<group>`` for each group with local subscribers; the publish
script announces each event there with its fields (``PUBLISH`` from a
script reaches the subscribers on every node), and the reader hands it to
the local hub. Ids of one group are announced in order.

**Positions and catching up.** Pub/sub forgets what it could not deliver; the
streams do not. A channel's first local subscriber waits until its group's
subscription is confirmed, then the reader reads the group's counter ``C``
and starts the channel there: events up to ``C`` are in the history, read
after, and every event above is announced to a confirmed subscription. Each
event carries the id of the previous event of its channel; one whose
previous id is above what the reader delivered means announcements were
lost (a node restarted, the cluster bus broke): the reader reads the group's
streams from where it was up to that event (``XRANGE``) and delivers what
was missing, in order. Every few seconds it also reads each group's counter
and catches up a group whose counter it has not reached since the last
look (a lost last event). After a lost connection it connects to another
node, subscribes again and catches up every group from its positions. A
channel whose stream was trimmed past what the reader delivered cuts off
its local subscribers, as on one server.

**Connections.** Per process: the reader's connection, and a
:class:`redis.cluster.RedisCluster` client with a bounded pool of
``max_connections`` per node for publishing, history and catching up.
Commands are not retried (a publish that failed in mid-air may or may not be
stored); a node that cannot be reached makes publishing and history of its
groups raise :class:`~flask_evstream.brokers.redis.RedisUnavailable`, and the
other nodes' groups go on.

**Cost.** A classic ``PUBLISH`` in a cluster is sent to every node over the
cluster bus, whatever node the subscribers are on: the bus carries each
event once per node. That is fine for the event rates of server-sent
events; sharded pub/sub (Redis 7) would keep it within a shard, at the price
of a connection per shard and per worker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import typing as t
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.retry import Retry

from ..concurrency import new_event
from .redis import (
    _CONNECTION_ERRORS,
    BACKOFF_FIRST,
    BACKOFF_MAX,
    BLOCK_MS,
    RedisBroker,
    RedisUnavailable,
    _previous,
    _wrong_type,
)

__all__ = ["RedisClusterBroker", "group_of", "parse_cluster_url"]

logger = logging.getLogger("flask_evstream.redis")

#: Seconds between two looks at the counters of the groups read here (a
#: lost announcement of a group's last event is delivered at most two of
#: these later).
SWEEP_SECONDS = BLOCK_MS / 1000

_UNREACHABLE = _CONNECTION_ERRORS + (ClusterDownError, ClusterError, SlotNotCoveredError)


def group_of(channel: str) -> str:
    """The group of ``channel`` on a cluster: its hash tag (the text between
    its ``{`` and ``}``), or the whole name when it has none."""
    start = channel.find("{")
    if start >= 0:
        end = channel.find("}", start + 1)
        if end > start + 1:
            return channel[start + 1 : end]
    return channel


def parse_cluster_url(url: str) -> dict[str, t.Any]:
    """The startup nodes and connection options of a ``redis+cluster://`` URL.

    :raises ValueError: another scheme, no node, a bad port, or a database
        other than 0 (a cluster has only database 0).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis+cluster", "rediss+cluster"):
        raise ValueError(
            f"a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://, got {url!r}"
        )
    credentials, _, hosts = parts.netloc.rpartition("@")
    options: dict[str, t.Any] = {}
    if credentials:
        user, has_password, password = credentials.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    nodes = []
    for address in hosts.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"a Redis Cluster URL names nodes as host:port separated by commas,"
                f" got {address!r} in {url!r}"
            )
        nodes.append((host, int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, got {parts.path!r} in {url!r}")
    if parts.scheme == "rediss+cluster":
        options["ssl"] = True
    return {"nodes": nodes, "options": options}


def _check_braces(channel: str) -> None:
    opening, closing = channel.count("{"), channel.count("}")
    if (opening, closing) == (0, 0):
        return
    start, end = channel.find("{"), channel.find("}")
    if (opening, closing) != (1, 1) or end < start + 2:
        raise ValueError(
            "on Redis Cluster a channel name holds at most one hash tag, like"
            f" 'room:{{42}}:chat', and no other braces, got {channel!r}"
        )


class RedisClusterBroker(RedisBroker):
    """Events in the Redis Streams of a cluster, delivered to every process
    that subscribes.

    Takes the parameters of :class:`~flask_evstream.brokers.redis.RedisBroker`;
    ``url`` is ``redis+cluster://host:port[,host:port...]/`` and
    ``max_connections`` is per node.

    .. versionadded:: 0.2
    """

    _unreachable = _UNREACHABLE

    def __init__(self, url: str, *, prefix: str = "evstream", **kwargs: t.Any) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(
                f"the Redis prefix must be a non-empty name without braces, got {prefix!r}"
            )
        self._cluster = parse_cluster_url(url)
        super().__init__(url, prefix=prefix, **kwargs)
        # group -> its channels with local subscribers (the groups read here).
        self._groups: dict[str, set[str]] = {}
        self._subscribed: set[str] = set()  # confirmed on the reader's connection
        # group -> (its channels waiting for the confirmation, the event set then)
        self._waiting: dict[str, tuple[list[str], t.Any]] = {}
        self._received: dict[str, int] = {}  # group -> the highest id announced to the reader
        self._due: dict[str, int] = {}  # group -> its counter at the last look
        self._stale: dict[str, int | None] = {}  # group -> catch up to (None: the counter)
        self._conn: t.Any = None  # the reader's connection, while subscribed
        self._send_lock = threading.Lock()
        self._node = ""  # host:port the reader is connected to
        # group -> (when to try catching it up again, failed tries)
        self._retry_at: dict[str, tuple[float, int]] = {}
        self._next_node = 0

    def _connect(self, max_connections: int) -> t.Any:
        options = self._cluster["options"]
        node: t.Any = ClusterNode  # untyped in redis-py
        try:
            return RedisCluster(
                startup_nodes=[node(host, port) for host, port in self._cluster["nodes"]],
                require_full_coverage=False,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                connection_pool_class=redis.BlockingConnectionPool,
                max_connections=max_connections,
                client_name=self.prefix,
                **options,
            )
        except RedisClusterException as e:
            raise RedisUnavailable(f"cannot reach the Redis Cluster: {e}") from e

    # -- keys ---------------------------------------------------------------

    def group(self, channel: str) -> str:
        return group_of(channel)

    def key(self, group: str, name: str) -> str:
        return f"{self.prefix}:{{{group}}}:{name}"

    def _notify_channel(self, group: str) -> str:
        return f"{self.prefix}:n:{group}"

    def check_channels(self, channels: t.Sequence[str]) -> None:
        """Refuse a subscription the cluster cannot serve in order: a channel
        name with braces other than one hash tag, or channels of two groups.

        :raises ValueError: it says which channels and how to name them.
        """
        groups: dict[str, str] = {}
        for channel in channels:
            _check_braces(channel)
            groups.setdefault(group_of(channel), channel)
        if len(groups) > 1:
            (g1, c1), (g2, c2) = list(groups.items())[:2]
            raise ValueError(
                "on Redis Cluster the channels of one subscription must share one hash tag"
                f" (their ids come from one counter), got {c1!r} (group {g1!r}) and {c2!r}"
                f" (group {g2!r}); name them like 'room:{{42}}:chat' and 'room:{{42}}:typing'"
            )

    def publish(self, channel: str, data: str, *, event: str | None, id: int | None) -> int:
        _check_braces(channel)
        return super().publish(channel, data, event=event, id=id)

    def publish_many(self, channel: str, items: t.Sequence[tuple[str, str | None]]) -> list[int]:
        _check_braces(channel)
        return super().publish_many(channel, items)

    def _run_publish_many(self, keys: list[str], calls: list[list[str | int]]) -> list[t.Any]:
        # A cluster pipeline cannot run scripts: one call after the other.
        self._redis  # noqa: B018 (made at first use, with the script)
        return [self._publish_script(keys=keys, args=args) for args in calls]

    # -- local channels ---------------------------------------------------

    def channels_added(self, channels: list[str]) -> None:
        """Start delivering ``channels``: once their group's subscription is
        confirmed, from the group's counter then (see the module's doc).

        Called with the registration lock held (one at a time).
        """
        if self._closed:
            return
        by_group: dict[str, list[str]] = {}
        for channel in channels:
            by_group.setdefault(group_of(channel), []).append(channel)
        send: list[str] = []
        waits = []
        with self._lock:
            start = self._reader is None or self._reader_pid != os.getpid()
            if start:
                self._start_reader()
            for group, names in by_group.items():
                known = self._groups.setdefault(group, set())
                known.update(names)
                if group in self._subscribed:
                    # Announcements the reader has not handled yet are above this.
                    for name in names:
                        self._positions[name] = self._received.get(group, 0)
                    continue
                waiting = self._waiting.get(group)
                if waiting is None:
                    waiting = self._waiting[group] = ([], new_event())
                    send.append(group)
                waiting[0].extend(names)
                waits.append(waiting[1])
        if send:
            self._send("SUBSCRIBE", send)
        deadline = time.monotonic() + self._socket_timeout
        for done in waits:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                break
        # Not confirmed in time (no connection): start at the counter; the
        # reader catches these groups up once subscribed.
        with self._lock:
            late = {g: self._waiting.pop(g)[0] for g in by_group if g in self._waiting}
        for group, names in late.items():
            self._start_late(group, names)

    def _start_late(self, group: str, names: list[str]) -> None:
        try:
            counter = self._get_counter(self._redis, group)
        except (*self._unreachable, redis.ResponseError) as e:
            counter = max(self._received.get(group, 0), self._highs.get(group, 0))
            logger.warning(
                "Redis is unreachable (%s); channels %r start after id %d", e, names, counter
            )
        with self._lock:
            for name in names:
                if name in self._groups.get(group, ()):
                    self._positions.setdefault(name, counter)
            if group in self._groups:
                self._stale[group] = None

    def channels_removed(self, channels: list[str]) -> None:
        gone = []
        with self._lock:
            for channel in channels:
                self._positions.pop(channel, None)
                group = group_of(channel)
                names = self._groups.get(group)
                if names is not None:
                    names.discard(channel)
                    if not names:
                        del self._groups[group]
                        self._subscribed.discard(group)
                        for state in (self._received, self._due, self._stale, self._retry_at):
                            state.pop(group, None)
                        gone.append(group)
        if gone:
            self._send("UNSUBSCRIBE", gone)

    def _send(self, command: str, groups: list[str]) -> None:
        """Send a (un)subscription on the reader's connection, if it has one
        (the reader subscribes to every group when it connects)."""
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.send_command(command, *(self._notify_channel(g) for g in groups))
            except _CONNECTION_ERRORS:
                pass  # the reader sees it too, and subscribes again

    # -- the reader -------------------------------------------------------

    def _open(self) -> t.Any:
        """Connect to the next node and subscribe to every group."""
        nodes = [(n.host, n.port) for n in self._redis.get_primaries()] or self._cluster["nodes"]
        host, port = nodes[self._next_node % len(nodes)]
        self._next_node += 1
        options = dict(self._cluster["options"])
        ssl = options.pop("ssl", False)
        cls = redis.SSLConnection if ssl else redis.Connection
        conn: t.Any = cls(
            host=host,
            port=port,
            decode_responses=True,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            client_name=f"{self.prefix}-reader",
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # pub/sub messages as replies, not RESP3 pushes
            **options,
        )
        conn.connect()
        with self._send_lock, self._lock:
            groups = list(self._groups)
            self._subscribed.clear()
            for group in groups:
                self._stale[group] = None  # announcements may have been lost
            if groups:
                conn.send_command("SUBSCRIBE", *(self._notify_channel(g) for g in groups))
            else:
                conn.send_command("PING")
            self._conn = conn
            self._node = f"{host}:{port}"
        return conn

    def _run(self) -> None:
        failures = 0
        conn = None
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._open()
                    if failures:
                        logger.warning("Redis is back; reading events again")
                        self.reconnects += 1
                        failures = 0
                wait = max(0.0, next_sweep - time.monotonic())
                if self._stale:
                    wait = min(wait, 0.2)  # a group to catch up, maybe its node came back
                if conn.can_read(timeout=wait):
                    self._handle(conn.read_response())
                if self._stale:
                    self._catch_up_stale()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    self._sweep()
            except _CONNECTION_ERRORS as e:
                self._drop(conn)
                conn = None
                if self._stop.is_set():
                    break
                if not failures:
                    logger.warning(
                        "Lost the Redis Cluster node %s (%s); reconnecting", self._node, e
                    )
                failures += 1
                self._backoff(failures)
            except Exception:
                if self._stop.is_set():
                    break
                logger.exception("Error in the Redis Cluster reader; it goes on")
                self._drop(conn)
                conn = None
                failures += 1
                self._backoff(failures)
        self._drop(conn)

    def _drop(self, conn: t.Any) -> None:
        """Forget the reader's connection; channels waiting for a
        confirmation start late."""
        with self._send_lock, self._lock:
            self._conn = None
            self._subscribed.clear()
            waiting = list(self._waiting.values())
        for _, done in waiting:
            done.set()
        if conn is not None:
            conn.disconnect()

    def _handle(self, reply: t.Any) -> None:
        kind = reply[0]
        if kind == "message":
            self._announced(reply[1], reply[2])
        elif kind == "subscribe":
            self._confirmed(reply[1][len(self._notify_channel("")) :])

    def _confirmed(self, group: str) -> None:
        with self._lock:
            if group not in self._groups:
                return  # unsubscribed meanwhile
            self._subscribed.add(group)
            waiting = self._waiting.pop(group, None)
        if waiting is None:
            return
        names, done = waiting
        try:
            counter = self._get_counter(self._redis, group)
        except (*self._unreachable, redis.ResponseError):
            with self._lock:
                self._waiting[group] = waiting  # channels_added starts them late
            done.set()
            return
        with self._lock:
            for name in names:
                if name in self._groups.get(group, ()):
                    self._positions[name] = counter
            if counter > self._received.get(group, 0):
                self._received[group] = counter
        done.set()

    def _announced(self, notify_channel: str, payload: str) -> None:
        group = notify_channel[len(self._notify_channel("")) :]
        try:
            channel, number, before, *pairs = json.loads(payload)
            n, base = int(number), int(before)
            fields = dict(zip(pairs[::2], pairs[1::2]))
        except (TypeError, ValueError):
            logger.error("Skipping a bad announcement on %r: %.200r", notify_channel, payload)
            return
        with self._lock:
            if group not in self._groups:
                return
            received = self._received.get(group, 0)
            if n > received:
                self._received[group] = n
            # Every announcement of the group comes here, in order: one whose
            # counter before is above the last one received means some were
            # lost (and one whose channel's previous event was not delivered).
            lost = base > received or group in self._stale
            position = self._positions.get(channel)
            if not lost and (position is None or n <= position):
                return  # not read here, or delivered
            if lost or (position is not None and _previous(fields) > position):
                # Read them from the streams, in order. Those lost came
                # before this one (the subscription was confirmed before it
                # was published).
                upto = self._stale.get(group)
                self._stale[group] = n if upto is None else max(upto, n)
                return
            assert position is not None
            self._positions[channel] = n
            self._saw(group, n)
        self._deliver(channel, n, fields)

    def _deliver(self, channel: str, n: int, fields: dict[str, str]) -> None:
        try:
            message = self._event(n, fields)
        except (TypeError, ValueError):
            logger.exception("Skipping a bad event %d in channel %r", n, channel)
            return
        self.hub.deliver(channel, n, message)

    def _catch_up_stale(self) -> None:
        now = time.monotonic()
        with self._lock:
            todo = [
                (g, upto)
                for g, upto in self._stale.items()
                if g in self._subscribed and self._retry_at.get(g, (0.0, 0))[0] <= now
            ]
        for group, upto in todo:
            try:
                self._catch_up(group, upto)
            except (*self._unreachable, redis.ResponseError) as e:
                # Its node is away (or its counter is a foreign key): try
                # again later, less and less often.
                tries = self._retry_at.get(group, (0.0, 0))[1] + 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(tries, 10))
                self._retry_at[group] = (time.monotonic() + delay, tries)
                logger.debug("Cannot catch up group %r yet: %s", group, e)
            else:
                self._retry_at.pop(group, None)

    def _catch_up(self, group: str, requested: int | None) -> None:
        """Deliver the events of ``group``'s local channels after their
        positions, up to ``requested`` (the counter when ``None``), in order."""
        upto = self._get_counter(self._redis, group) if requested is None else requested
        with self._lock:
            positions = self._positions
            start = {c: positions[c] for c in self._groups.get(group, ()) if c in positions}
        replies = []
        if start:
            with self._redis.pipeline(transaction=False) as pipe:
                for channel, position in start.items():
                    pipe.xrange(self._stream_key(channel), f"{position + 1}-0", f"{upto}-0")
                replies = pipe.execute(raise_on_error=False)
        entries: list[tuple[int, str, dict[str, str]]] = []
        cut = []
        for (channel, position), messages in zip(start.items(), replies):
            if isinstance(messages, BaseException):
                if isinstance(messages, self._unreachable) or not _wrong_type(messages):
                    raise messages
                self._mark_bad(channel, self._type(self._stream_key(channel)))
                continue  # a foreign key: that channel alone gets nothing
            if messages and _previous(messages[0][1]) > position:
                cut.append((channel, int(messages[-1][0].partition("-")[0])))
                continue
            entries.extend((int(i.partition("-")[0]), channel, f) for i, f in messages)
        entries.sort(key=lambda entry: entry[0])
        for channel, last in cut:
            logger.warning(
                "The reader fell behind on channel %r: events were trimmed before it"
                " read them; its subscribers here are cut off and replay the history"
                " when they reconnect",
                channel,
            )
            with self._lock:
                if channel in self._positions:
                    self._positions[channel] = last
            self.hub.cut_off(channel)
        with self._lock:
            if group in self._stale and self._stale[group] == requested:
                self._stale.pop(group)  # else more was asked meanwhile
            if upto > self._received.get(group, 0):
                self._received[group] = upto
        for n, channel, fields in entries:
            with self._lock:
                now_at = self._positions.get(channel)
                if now_at is None or n <= now_at:
                    continue
                self._positions[channel] = n
                self._saw(group, n)
            self._deliver(channel, n, fields)

    def _sweep(self) -> None:
        """Catch up the groups whose counter, as read at the last sweep, the
        reader has not reached (their last announcement was lost); read the
        counters again."""
        with self._lock:
            groups = list(self._groups)
            for group in groups:
                due = self._due.get(group, 0)
                if due > self._received.get(group, 0) and group not in self._stale:
                    self._stale[group] = due
        if not groups:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for group in groups:
                    pipe.get(self.key(group, "id"))
                counters = pipe.execute(raise_on_error=False)
        except self._unreachable:
            return
        with self._lock:
            for group, counter in zip(groups, counters):
                if isinstance(counter, str) and group in self._groups:
                    self._due[group] = int(counter)

    # -- lifecycle ---------------------------------------------------------

    def info(self) -> dict[str, t.Any]:
        """The reader's state, for tests and monitoring."""
        with self._lock:
            return {
                "reader": None if self._reader is None else type(self._reader).__name__,
                "connected": self._conn is not None,
                "node": self._node,
                "channels": len(self._positions),
                "groups": len(self._groups),
                "stale": len(self._stale),
                "reconnects": self.reconnects,
            }

    def close(self) -> None:
        """Stop the reader and disconnect. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        reader = self._reader
        if reader is not None and self._reader_pid == os.getpid():
            conn = self._conn
            if conn is not None:
                conn.disconnect()  # wakes a thread blocked reading it
            if not isinstance(reader, threading.Thread):
                reader.kill(block=True, timeout=5)
            else:
                reader.join(5)
        if self._client is not None:
            self._client.close()
