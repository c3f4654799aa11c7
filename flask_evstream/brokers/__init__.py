"""Brokers: where published events are stored and how they reach each process.

* ``memory://`` (:class:`~flask_evstream.brokers.memory.MemoryBroker`), the
  default: one process, history in a bounded ring per channel.
* ``redis://host:port/db`` (:class:`~flask_evstream.brokers.redis.RedisBroker`):
  Redis Streams, for many workers and hosts.
* ``redis+cluster://host:port/``
  (:class:`~flask_evstream.brokers.redis_cluster.RedisClusterBroker`): the
  same on a Redis Cluster (or a Valkey cluster).

A broker is a subclass of :class:`~flask_evstream.brokers.base.Broker`; a new
engine is one module.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Broker, BrokerUnavailable

__all__ = ["Broker", "BrokerUnavailable", "broker_from_url"]


def broker_from_url(
    url: str,
    *,
    history: int,
    prefix: str = "evstream",
    max_connections: int = 4,
    timeout: float = 10.0,
    channel_ttl: float | None = None,
) -> Broker:
    """Make the broker ``url`` names.

    :param url: ``memory://``, ``redis://[:password@]host[:port][/db]``
        (also ``rediss://`` and ``unix://``) or
        ``redis+cluster://[:password@]host:port[,host:port...]/`` (also
        ``rediss+cluster://``).
    :param history: events kept per channel for replay.
    :param prefix, max_connections, timeout: Redis only: the key prefix, the
        pool size and the timeout of each command, in seconds.
    :param channel_ttl: seconds a channel's history is kept after its last
        publish (``None``: forever).
    :raises ValueError: an unknown scheme.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(history=history, channel_ttl=channel_ttl)
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from .redis import RedisBroker

        cls = RedisBroker
        if scheme.endswith("+cluster"):
            from .redis_cluster import RedisClusterBroker

            cls = RedisClusterBroker
        return cls(
            url,
            history=history,
            prefix=prefix,
            max_connections=max_connections,
            socket_timeout=timeout,
            channel_ttl=channel_ttl,
        )
    raise ValueError(
        "EVSTREAM_BROKER_URL must start with memory://, redis://, rediss://, unix://,"
        f" redis+cluster:// or rediss+cluster://, got {url!r}"
    )
