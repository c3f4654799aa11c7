"""The Redis broker: Redis Streams shared by every worker process and host.

**Ids.** One counter key, ``<prefix>:id``, numbers every event of every
channel. A publish runs one Lua script (``EVALSHA``, loaded again by redis-py
when Redis forgot it) that increments the counter (or, for an explicit id,
checks that it is above the counter and sets it), then appends the event to
the channel's stream, ``<prefix>:ch:<channel>``, with the stream entry id
``<n>-0``. Script execution is atomic: every event whose id is at most the
counter's value is already in its stream. Ids are handled as decimal strings
inside the script, so ids up to 18 digits stay exact (Lua numbers are
doubles).

**History.** A stream keeps ``history + slack`` entries (``XADD MAXLEN ~``,
Redis's cheap approximate trimming, which never keeps fewer than asked).
:meth:`RedisBroker.history` reads, per channel, the newest ``history + 1``
entries above the client's position (``XREVRANGE ... COUNT history+1``, one
pipelined round trip for all channels): it returns the newest ``history`` of
them, and a channel that had one more has a gap. Since trimming only ever
removes the oldest entries and leaves at least ``history + 1``, this is
exactly the answer :class:`~flask_evstream.brokers.memory.MemoryBroker`
gives, with approximate trimming. (Redis 7.0's ``max-deleted-entry-id``
counts ``XDEL`` only, not trimming, so it cannot tell a gap.) The ``slack``
entries past the history are for the reader below: they let it fall behind
a burst without losing events.

**The reader.** Each broker (each worker process) has one reader, started
with the first local subscriber: a greenlet under gevent, a daemon thread
otherwise. On a connection of its own it loops on ``XREAD BLOCK`` over the
streams of the channels that have subscribers in this process, sorts each
reply by id across streams, and hands every event to the local
:class:`~flask_evstream.channels.Hub`: one :class:`~flask_evstream.Event`,
encoded once, for all the subscribers of this process. ``XREAD`` without
``COUNT`` returns everything above the positions at one instant, so ids
arrive in increasing order across channels.

**Positions.** When a channel gets its first local subscriber
(:meth:`~RedisBroker.channels_added`, called after the subscriber is
registered and before its history is read) the broker reads the counter,
``C``, and the reader starts that channel at ``C-0``: events up to ``C`` are
in the stream when the history is read after, and the reader delivers every
event above ``C``; the subscription drops the overlap. The reader keeps the
last id it delivered per channel and never delivers an id twice.

**Waking the reader.** A channel added while the reader waits in ``XREAD``
must be read at once: the broker sends ``CLIENT UNBLOCK <reader id>`` (the id
the reader got with ``CLIENT ID``) from a pooled connection, and the reader
starts over with the new streams. ``BLOCK`` is bounded (5 s) as a safety net.
An ``XREAD`` that was already under way when a channel was added at ``C``
does not hold that channel's events; the reader delivers nothing above ``C``
from its reply (the next ``XREAD`` reads them with the new channel's), or a
subscriber of an old and the new channel would get a newer event of the old
one before an older one of the new one, and drop the older one.

**Falling behind.** Every entry carries the id of the previous event of its
channel (``prev``). When the reader sees an entry whose ``prev`` is above
what it delivered, events were trimmed before it read them: it cuts off the
local subscribers of that channel, which reconnect with ``Last-Event-ID``
and replay the history (with a gap event when it does not reach back).

**Redis going away.** The reader catches connection errors, logs once,
retries with exponential backoff (0.05 s doubling up to 2 s, with jitter),
reconnects, fetches its new client id and resumes ``XREAD`` from the
positions it had: events published meanwhile and still kept arrive in order
and once. Subscribers stay registered; their streams keep sending
heartbeats; a channel first subscribed meanwhile starts after the highest id
this process saw (nothing is lost; older events may come live too).
:meth:`~RedisBroker.publish` and :meth:`~RedisBroker.history`
raise :class:`RedisUnavailable` (a :class:`~flask_evstream.BrokerUnavailable`
and a :class:`redis.ConnectionError`) while Redis is unreachable; publish is
not retried (a publish that failed in mid-air may or may not be stored), and
a subscription whose history cannot be read goes live with the gap event.

**A foreign key.** A key under the prefix that is not a stream makes
``XREAD`` fail with ``WRONGTYPE`` for every stream in the call: the reader
then asks the type of each key, leaves the bad channels out (logged once;
looked at again after :data:`BAD_KEY_RETRY` seconds or a new subscriber) and
goes on with the others.

**Connections.** A broker holds the reader's connection plus a
:class:`redis.BlockingConnectionPool` of at most ``max_connections`` (4)
for publishing, history, ``GET`` and ``CLIENT UNBLOCK``: the count does not
grow with the number of subscribers. ``CLIENT LIST`` shows them named
``<prefix>-reader`` and ``<prefix>``.

**Durability.** Run Redis with ``appendonly yes`` (and ``appendfsync
everysec`` or ``always``) so the counter and the streams survive a restart.
A counter that went backwards (Redis restarted with no data) would reuse ids
clients already saw, which they would ignore; the reader logs an error when
it sees one.

**Expiry.** With a channel TTL (``EVSTREAM_CHANNEL_TTL``, a day by
default) each publish sets the stream's TTL again, so the stream of a
channel nobody publishes to goes away ``ttl`` after its last event. Once it
is gone nothing tells which ids it held, so the publish script also samples
the counter into a small clock stream, ``<prefix>:clock`` (an entry per
``clock_interval`` holding the counter before that publish, at most
``ttl / clock_interval`` of them, expiring too): a replay whose history
reaches back only to the start of a channel's current stream gets the gap
event when the client's id is older than the counter's value about ``ttl``
ago (0 for a deployment younger than the TTL). A client whose position is
more recent than that never gets a spurious gap; one that is older may.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import typing as t

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..concurrency import spawn
from ..event import Event
from .base import Broker, BrokerUnavailable, Replay, seconds

__all__ = ["RedisBroker", "RedisUnavailable"]

logger = logging.getLogger("flask_evstream.redis")

#: How long one ``XREAD`` waits at most (milliseconds), a safety net for a
#: lost wake-up.
BLOCK_MS = 5000

#: The reader's reconnection backoff: first delay and cap (seconds).
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0

# KEYS[1] the counter, KEYS[2] the stream, KEYS[3] the clock.
# ARGV[1] MAXLEN, ARGV[2] explicit id ("" for the next; with one event
# only), ARGV[3] the channel TTL in ms ("0": keep forever), ARGV[4] the
# clock's sampling interval in ms, ARGV[5] the clock's MAXLEN, ARGV[6] "1"
# when the counter expires with its channels (a missing counter then starts
# from the server's clock in microseconds, above every id it gave before),
# ARGV[7] the pub/sub channel to announce each event on ("": none) as the
# JSON array [channel, id, the counter before, field, value, ...], ARGV[8]
# the channel's name, ARGV[9] the number of events, then for each: its
# number of field/value strings, and those.
# Returns {1, id, id, ...} or, for an explicit id not above the counter,
# {0, last}. Ids are decimal strings throughout: Lua numbers are doubles,
# exact only to 2**53, and ids may have 18 digits.
_PUBLISH_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local last = redis.call('GET', KEYS[1])
local explicit = ARGV[2]
if not last then
  last = '0'
  if explicit == '' and ARGV[6] == '1' then
    local now = redis.call('TIME')
    last = now[1] .. string.format('%06d', tonumber(now[2]))
    redis.call('SET', KEYS[1], last)
  end
end
if explicit ~= '' and (#explicit < #last or (#explicit == #last and explicit <= last)) then
  return {0, last}
end
local base = last
local prev = '0'
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if top[1] then
  prev = string.sub(top[1][1], 1, -3)
end
local ids = {1}
local i = 10
for e = 1, tonumber(ARGV[9]) do
  local count = tonumber(ARGV[i])
  i = i + 1
  local n = explicit
  if n == '' then
    redis.call('INCR', KEYS[1])
    n = redis.call('GET', KEYS[1])
  else
    redis.call('SET', KEYS[1], n)
  end
  local fields = {'prev', prev}
  for j = i, i + count - 1 do
    fields[#fields + 1] = ARGV[j]
  end
  i = i + count
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], n .. '-0', unpack(fields))
  if ARGV[7] ~= '' then
    local message = {ARGV[8], n, last}
    for k = 1, #fields do
      message[#message + 1] = fields[k]
    end
    redis.call('PUBLISH', ARGV[7], cjson.encode(message))
  end
  last = n
  prev = n
  ids[#ids + 1] = n
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  if ARGV[6] == '1' then
    redis.call('PEXPIRE', KEYS[1], ttl * 2)
  end
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local sample = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if not sample[1] or ms - tonumber(string.match(sample[1][1], '^%d+')) >= tonumber(ARGV[4]) then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'base', base)
  end
  redis.call('PEXPIRE', KEYS[3], ttl * 2)
end
return ids
"""

#: The most events one publish_many call sends in one script call.
PUBLISH_MANY_BATCH = 500

_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisUnavailable(BrokerUnavailable, redis.ConnectionError):
    """Redis cannot be reached: a :class:`~flask_evstream.BrokerUnavailable`
    that is also the :class:`redis.ConnectionError` that 0.1 raised."""


#: Seconds before the reader tries again a channel whose key was not a stream.
BAD_KEY_RETRY = 30.0


def _wrong_type(error: BaseException) -> bool:
    return isinstance(error, redis.ResponseError) and str(error).startswith("WRONGTYPE")


def _number(entry_id: str) -> int:
    """The event id of a stream entry id ``<n>-0``."""
    return int(entry_id.partition("-")[0])


def _previous(fields: dict[str, str]) -> int:
    """The id of the event before this one in its channel (0: unknown)."""
    try:
        return int(fields.get("prev") or 0)
    except ValueError:
        return 0


class RedisBroker(Broker):
    """Events in Redis Streams, delivered to every process that subscribes.

    :param url: ``redis://[:password@]host[:port][/db]`` (also ``rediss://``
        and ``unix://``), as :meth:`redis.Redis.from_url` takes it.
    :param history: events kept per channel for replay (0: none).
    :param prefix: the prefix of the keys: ``<prefix>:id`` (the counter) and
        ``<prefix>:ch:<channel>`` (a channel's stream).
    :param slack: entries kept past ``history`` for the reader, so that a
        burst it reads late is not lost.
    :param max_connections: the size of the pool for publishing and history
        (the reader has one more connection of its own).
    :param socket_timeout: seconds a command waits for Redis.
    :param channel_ttl: seconds a channel's stream is kept after its last
        publish (``None``: forever).
    :param clock_interval: seconds between two samples of the counter in
        the clock stream (see "Expiry" above).
    """

    #: The errors that mean Redis cannot be reached.
    _unreachable: tuple[type[BaseException], ...] = _CONNECTION_ERRORS

    def __init__(
        self,
        url: str,
        *,
        history: int,
        prefix: str = "evstream",
        slack: int = 100,
        max_connections: int = 4,
        socket_timeout: float = 10.0,
        channel_ttl: float | None = None,
        clock_interval: float = 60.0,
    ) -> None:
        super().__init__(history=history, channel_ttl=channel_ttl)
        #: Seconds between two samples of the counter in the clock stream.
        self.clock_interval = seconds("clock_interval", clock_interval)
        #: The most samples kept: they reach back at least ``channel_ttl``.
        self.clock_size = (
            2 if self.channel_ttl is None else int(self.channel_ttl // clock_interval) + 2
        )
        if history < 0 or slack < 1:
            raise ValueError(f"history must be >= 0 and slack >= 1, got {history} and {slack}")
        self.url = url
        self.prefix = prefix
        self._stream_prefix = f"{prefix}:ch:"
        self._maxlen = history + slack
        self._socket_timeout = socket_timeout
        self._max_connections = max_connections
        self._client: t.Any = None  # made at first use: see _redis
        self._client_lock = threading.Lock()

        self._lock = threading.Lock()
        # Per channel with local subscribers: the last id the reader
        # delivered, or where it starts.
        self._positions: dict[str, int] = {}
        self._version = 0  # bumped when channels are added
        self._seen_version = 0  # the version of the reader's current XREAD
        # The lowest start position of the channels added since the reader's
        # current XREAD began: it delivers nothing above it from that reply.
        self._floor: int | None = None
        # Per group: the highest id this process saw (the counter check).
        self._highs: dict[str, int] = {}
        self._reader: t.Any = None  # the thread or greenlet
        self._reader_pid = 0
        self._reader_client: redis.Redis | None = None
        self._reader_id: int | None = None  # CLIENT ID of the reader, while connected
        self._stop = threading.Event()
        self._wake = threading.Event()  # the reader idles with no channel
        self._closed = False
        # Channels whose key is not a stream: when the reader found it out.
        self._bad: dict[str, float] = {}
        self._bad_logged: set[str] = set()  # log each bad channel once
        #: Times the reader lost Redis and connected again.
        self.reconnects = 0

    @property
    def _redis(self) -> t.Any:
        """The client for publishing and history, made at first use (an
        app starts while Redis is away)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._connect(self._max_connections)
                    self._publish_script = self._client.register_script(_PUBLISH_LUA)
                client = self._client
        return client

    def _connect(self, max_connections: int) -> t.Any:
        """The client for publishing and history: a bounded pool."""
        self._pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=max_connections,
            timeout=self._socket_timeout,
            decode_responses=True,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            client_name=self.prefix,
            retry=Retry(NoBackoff(), 0),
        )
        return redis.Redis(connection_pool=self._pool)

    # -- keys ---------------------------------------------------------------

    def group(self, channel: str) -> str:
        """The group of ``channel``: the channels that share one id counter
        (on one Redis server, all of them: ``""``)."""
        return ""

    def key(self, group: str, name: str) -> str:
        """The Redis key ``name`` of ``group``: ``id`` (the counter),
        ``clock``, or ``ch:<channel>`` (a channel's stream)."""
        return f"{self.prefix}:{name}"

    def _stream_key(self, channel: str) -> str:
        return self.key(self.group(channel), "ch:" + channel)

    def _notify_channel(self, group: str) -> str:
        """The pub/sub channel that announces the group's events ("": none)."""
        return ""

    # -- publish and history --------------------------------------------

    def publish(self, channel: str, data: str, *, event: str | None, id: int | None) -> int:
        """Store an event; the readers of every process deliver it.

        :raises ValueError: ``id`` is not higher than the last id.
        :raises RedisUnavailable: Redis is unreachable (the event may or
            may not be stored when the connection broke during the call).
        """
        if event is not None:
            Event(None, event=event)  # refuse a bad event type before storing it
        explicit = "" if id is None else str(max(id, 0))
        keys, args = self._script_args(channel, [(data, event)], explicit)
        try:
            self._redis  # noqa: B018 (made at first use, with the script)
            ok, value = self._publish_script(keys=keys, args=args)
        except self._unreachable as e:
            raise RedisUnavailable(
                f"cannot publish to channel {channel!r}: Redis is unreachable ({e});"
                " the event may or may not be stored"
            ) from e
        except redis.ResponseError as e:
            if _wrong_type(e):
                raise RuntimeError(
                    f"cannot publish to channel {channel!r}: the Redis key {keys[1]!r} exists"
                    " and is not a stream (another program uses this key prefix;"
                    " set EVSTREAM_REDIS_PREFIX)"
                ) from e
            raise
        n = int(value)
        if not ok:
            raise ValueError(f"publish id must be higher than the last id {n}, got {id}")
        self._saw(self.group(channel), n)
        return n

    def publish_many(self, channel: str, items: t.Sequence[tuple[str, str | None]]) -> list[int]:
        """Store several events of one channel in one round trip: one call
        of the publish script per :data:`PUBLISH_MANY_BATCH` events,
        pipelined."""
        for _, event in items:
            if event is not None:
                Event(None, event=event)
        calls = []
        keys: list[str] = []
        for start in range(0, len(items), PUBLISH_MANY_BATCH):
            keys, args = self._script_args(channel, items[start : start + PUBLISH_MANY_BATCH], "")
            calls.append(args)
        if not calls:
            return []
        try:
            replies = self._run_publish_many(keys, calls)
        except self._unreachable as e:
            raise RedisUnavailable(
                f"cannot publish to channel {channel!r}: Redis is unreachable ({e});"
                " some of the events may be stored"
            ) from e
        ids = [int(value) for reply in replies for value in reply[1:]]
        self._saw(self.group(channel), ids[-1])
        return ids

    def _script_args(
        self, channel: str, items: t.Sequence[tuple[str, str | None]], explicit: str
    ) -> tuple[list[str], list[str | int]]:
        """The keys and arguments of the publish script for ``items``."""
        group = self.group(channel)
        notify = self._notify_channel(group)
        ttl_ms = 0 if self.channel_ttl is None else max(1, round(self.channel_ttl * 1000))
        args: list[str | int] = [
            self._maxlen,
            explicit,
            ttl_ms,
            max(1, round(self.clock_interval * 1000)),
            self.clock_size,
            "1" if notify else "0",
            notify,
            channel,
            len(items),
        ]
        for data, event in items:
            if event is None:
                args += [2, "data", data]
            else:
                args += [4, "data", data, "event", event]
        keys = [self.key(group, "id"), self._stream_key(channel), self.key(group, "clock")]
        return keys, args

    def _run_publish_many(self, keys: list[str], calls: list[list[str | int]]) -> list[t.Any]:
        """Run the publish script once per call, pipelined (one call: no
        pipeline, so no script check before it)."""
        client = self._redis  # made at first use, with the script
        if len(calls) == 1:
            return [self._publish_script(keys=keys, args=calls[0], client=client)]
        with client.pipeline(transaction=False) as pipe:
            for args in calls:
                self._publish_script(keys=keys, args=args, client=pipe)
            return list(pipe.execute())

    def _saw(self, group: str, n: int) -> None:
        if n > self._highs.get(group, 0):
            self._highs[group] = n

    def history(self, channels: t.Sequence[str], after: int | None) -> Replay:
        """Return the kept events of ``channels`` above ``after`` and the
        channels with a gap.

        :raises RedisUnavailable: Redis is unreachable.
        """
        if after is None or not channels:
            return [], []
        keep = self.history_size
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    key = self._stream_key(channel)
                    pipe.xrevrange(key, "+", f"{after + 1}-0", count=keep + 1)
                    pipe.exists(key)
                replies = pipe.execute(raise_on_error=False)
        except self._unreachable as e:
            raise RedisUnavailable(f"cannot read history: Redis is unreachable ({e})") from e
        per_channel: dict[str, list[tuple[int, Event]]] = {}
        gap: list[str] = []
        # Channels whose history, as kept now, starts after `after`: their
        # stream may have expired (and started again) since.
        from_start: list[str] = []
        for channel, entries, exists in zip(channels, replies[::2], replies[1::2]):
            if isinstance(entries, BaseException):
                if isinstance(entries, self._unreachable):
                    raise RedisUnavailable(
                        f"cannot read history: Redis is unreachable ({entries})"
                    ) from entries
                if not _wrong_type(entries):
                    raise entries
                self._mark_bad(channel, self._type(self._stream_key(channel)))
                gap.append(channel)
                continue
            if len(entries) > keep:
                gap.append(channel)
                entries = entries[:keep]
            elif exists == 0 or (entries and _previous(entries[-1][1]) == 0):
                from_start.append(channel)
            events = []
            for entry_id, fields in reversed(entries):
                n = _number(entry_id)
                events.append((n, self._event(n, fields)))
            per_channel[channel] = events
        if (
            from_start
            and self.channel_ttl is not None
            and after < self._expired_below(self.group(channels[0]))
        ):
            # `after` may be older than an expired history of these channels.
            gap += from_start
        return self.merge(per_channel, gap)

    def exists(self, channel: str) -> bool:
        try:
            return bool(self._redis.exists(self._stream_key(channel)))
        except self._unreachable as e:
            raise RedisUnavailable(f"cannot read history: Redis is unreachable ({e})") from e

    def _expired_below(self, group: str) -> int:
        """An id at or above every event of every channel of ``group`` that
        may have expired: the counter just before the first publish the
        clock sampled after ``now - ttl`` (0 for a new deployment), or the
        counter now when there is none. A channel expires ``ttl`` after its
        last publish, so every event of an expired stream came before that
        one."""
        assert self.channel_ttl is not None
        since_ms = int((time.time() - self.channel_ttl) * 1000) + 1
        try:
            samples = self._redis.xrange(self.key(group, "clock"), f"{since_ms}-0", "+", count=1)
            if samples:
                fields = t.cast("dict[str, str]", samples[0][1])
                return int(fields.get("base") or 0)
            return self._get_counter(self._redis, group)
        except self._unreachable as e:
            raise RedisUnavailable(f"cannot read history: Redis is unreachable ({e})") from e

    @staticmethod
    def _event(n: int, fields: dict[str, str]) -> Event:
        return Event(fields.get("data", ""), event=fields.get("event"), id=str(n))

    # -- local channels ---------------------------------------------------

    def channels_added(self, channels: list[str]) -> None:
        """Start reading ``channels`` from the counter's current value.

        Called after the subscriber is registered and before its history is
        read: events up to the counter are in the history, the reader
        delivers those above. When Redis is unreachable they start at the
        highest id this process saw: nothing published since is lost, and
        events published before it are delivered too.
        """
        if self._closed:
            return
        with self._lock:
            for channel in channels:
                self._bad.pop(channel, None)  # look at its key again
        try:
            counter = self._get_counter(self._redis, "")
        except self._unreachable as e:
            counter = self._highs.get("", 0)
            logger.warning(
                "Redis is unreachable (%s); channels %r start after id %d", e, channels, counter
            )
        with self._lock:
            for channel in channels:
                self._positions[channel] = counter
            if self._floor is None or counter < self._floor:
                self._floor = counter
            self._version += 1
            version = self._version
            start = self._reader is None or self._reader_pid != os.getpid()
            if start:
                self._start_reader()
        if not start:
            self._wake_reader(version)

    def channels_removed(self, channels: list[str]) -> None:
        with self._lock:
            for channel in channels:
                self._positions.pop(channel, None)

    def _get_counter(self, client: t.Any, group: str) -> int:
        # Every id seen before the GET was stored before it ran.
        high = self._highs.get(group, 0)
        key = self.key(group, "id")
        counter = int(client.get(key) or 0)
        if counter < high:
            logger.error(
                "The event id counter %r went back from %d to %d: Redis lost its data"
                " (run it with appendonly yes). Clients ignore events until ids pass"
                " the ones they saw.",
                key,
                high,
                counter,
            )
            self._highs[group] = counter
            with self._lock:
                for channel, position in self._positions.items():
                    if position > counter and self.group(channel) == group:
                        self._positions[channel] = counter
        else:
            self._saw(group, counter)
        return counter

    def _start_reader(self) -> None:
        """Start the reader (under the lock)."""
        self._reader_pid = os.getpid()
        self._reader_client = None
        self._reader_id = None
        # Made here, in the worker, in case gevent patched threading since.
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reader = spawn(self._run, name="evstream-redis-reader")

    def _wake_reader(self, version: int) -> None:
        """Make the reader start a new ``XREAD`` that includes ``version``'s
        channels: unblock it until it has, or it is not connected."""
        self._wake.set()
        for attempt in range(100):
            reader_id = self._reader_id
            if self._seen_version >= version or reader_id is None or self._closed:
                return
            try:
                if self._redis.client_unblock(reader_id):
                    return
            except _CONNECTION_ERRORS:
                return  # the reader is reconnecting; it reads all channels then
            # Not blocked yet: it is between its snapshot and its XREAD, or
            # delivering. Try again in a moment.
            time.sleep(0.001 * min(attempt + 1, 10))

    # -- the reader -------------------------------------------------------

    def _connect_reader(self) -> redis.Redis:
        client = self._reader_client
        if client is None:
            client = self._reader_client = redis.Redis.from_url(
                self.url,
                single_connection_client=True,
                decode_responses=True,
                socket_timeout=BLOCK_MS / 1000 + self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                client_name=f"{self.prefix}-reader",
                retry=Retry(NoBackoff(), 0),
            )
        if self._reader_id is None:
            reader_id = int(client.client_id())
            self._get_counter(client, "")  # checks that it did not go back
            self._reader_id = reader_id
        return client

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                client = self._connect_reader()
                with self._lock:
                    now = time.monotonic()
                    streams = {
                        self._stream_prefix + channel: f"{position}-0"
                        for channel, position in self._positions.items()
                        if now - self._bad.get(channel, -BAD_KEY_RETRY) >= BAD_KEY_RETRY
                    }
                    self._seen_version = self._version
                    self._floor = None
                    self._wake.clear()
                if failures:
                    logger.warning("Redis is back; reading events again")
                    self.reconnects += 1
                    failures = 0
                if not streams:
                    self._wake.wait(BLOCK_MS / 1000)
                    continue
                try:
                    reply = client.xread(streams, block=BLOCK_MS)  # type: ignore[arg-type]
                except redis.ResponseError as e:
                    if not _wrong_type(e):
                        raise
                    if not self._find_bad(client, list(streams)):
                        self._stop.wait(BACKOFF_MAX)  # the key changed again meanwhile
                    continue
                if reply:
                    with self._lock:
                        limit = self._floor
                    self._dispatch(reply, limit)
            except _CONNECTION_ERRORS as e:
                self._reader_id = None
                if self._stop.is_set():
                    break
                if not failures:
                    logger.warning("Lost Redis (%s); reconnecting", e)
                failures += 1
                self._backoff(failures)
            except Exception:
                if self._stop.is_set():
                    break
                logger.exception("Error in the Redis reader; it goes on")
                self._reader_id = None
                failures += 1
                self._backoff(failures)
        last = self._reader_client
        self._reader_client = None
        self._reader_id = None
        if last is not None:
            last.close()

    def _backoff(self, failures: int) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures - 1, 10))
        self._stop.wait(delay * random.uniform(0.5, 1.0))

    def _dispatch(self, reply: t.Any, limit: int | None) -> None:
        """Deliver one ``XREAD`` reply, in id order across streams, up to
        ``limit``.

        A channel added while the ``XREAD`` was under way starts at the
        counter ``C`` it had then, and this reply does not hold its events
        above ``C``. Delivering an event above ``C`` of another channel now
        would put it before them, and a subscriber of both channels drops
        events older than the last it got: those wait for the next ``XREAD``,
        which reads all channels at one instant.
        """
        items = reply.items() if isinstance(reply, dict) else reply  # RESP3 or RESP2
        entries: list[tuple[int, str, dict[str, str]]] = []
        skip = len(self._stream_prefix)
        for stream, messages in items:
            if isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], list):
                messages = messages[0]  # RESP3 wraps them once more
            channel = stream[skip:]
            for entry_id, fields in messages:
                entries.append((_number(entry_id), channel, fields))
        entries.sort(key=lambda entry: entry[0])
        for n, channel, fields in entries:
            if limit is not None and n > limit:
                break
            with self._lock:
                position = self._positions.get(channel)
                if position is None or n <= position:
                    continue  # removed, or delivered (or before the start)
                self._positions[channel] = n
                self._saw("", n)
            if _previous(fields) > position:
                logger.warning(
                    "The reader fell behind on channel %r: events after id %d were"
                    " trimmed before it read them; its subscribers here are cut off"
                    " and replay the history when they reconnect",
                    channel,
                    position,
                )
                self.hub.cut_off(channel)
                continue
            try:
                message = self._event(n, fields)
            except (TypeError, ValueError):
                logger.exception("Skipping a bad event %d in channel %r", n, channel)
                continue
            self.hub.deliver(channel, n, message)

    def _find_bad(self, client: redis.Redis, keys: list[str]) -> int:
        """After a WRONGTYPE from ``XREAD``: leave out the channels whose key
        is not a stream, so that the others go on (each logged once; looked
        at again after :data:`BAD_KEY_RETRY` seconds or a new subscriber)."""
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            types = pipe.execute()
        skip = len(self._stream_prefix)  # one Redis server: keys of group ""
        bad = [
            (key[skip:], kind) for key, kind in zip(keys, types) if kind not in ("stream", "none")
        ]
        for channel, kind in bad:
            self._mark_bad(channel, kind)
        return len(bad)

    def _type(self, key: str) -> str:
        try:
            return str(self._redis.type(key))
        except redis.RedisError:
            return "unknown"

    def _mark_bad(self, channel: str, kind: str) -> None:
        with self._lock:
            logged = channel in self._bad or channel in self._bad_logged
            self._bad[channel] = time.monotonic()
            self._bad_logged.add(channel)
        if not logged:
            logger.error(
                "Channel %r cannot be used: the Redis key %r holds a %s, not a stream"
                " (another program uses the key prefix %r?); its subscribers here get"
                " no events, the other channels go on",
                channel,
                self._stream_key(channel),
                kind,
                self.prefix,
            )

    # -- lifecycle ---------------------------------------------------------

    def info(self) -> dict[str, t.Any]:
        """The reader's state, for tests and monitoring."""
        with self._lock:
            channels = len(self._positions)
        return {
            "reader": None if self._reader is None else type(self._reader).__name__,
            "connected": self._reader_id is not None,
            "reader_id": self._reader_id,
            "channels": channels,
            "reconnects": self.reconnects,
        }

    def close(self) -> None:
        """Stop the reader and disconnect. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        reader = self._reader
        if reader is not None and self._reader_pid == os.getpid():
            if not isinstance(reader, threading.Thread):  # a greenlet
                reader.kill(block=True, timeout=5)
            else:
                # Unblock its XREAD; again if it was about to start one.
                for _ in range(100):
                    reader_id = self._reader_id
                    if reader_id is not None:
                        try:
                            self._redis.client_unblock(reader_id)
                        except _CONNECTION_ERRORS:
                            pass
                    reader.join(0.05)
                    if not reader.is_alive():
                        break
            client = self._reader_client
            if client is not None:
                self._reader_client = None
                client.close()
        if self._client is not None:
            self._pool.disconnect()
