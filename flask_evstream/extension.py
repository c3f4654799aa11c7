"""The Flask extension :class:`EvStream` and its configuration."""

from __future__ import annotations

import dataclasses
import typing as t
import weakref

from flask import abort, current_app, has_app_context, has_request_context
from werkzeug.exceptions import BadRequest

from .brokers.base import MAX_TTL
from .channels import Subscription, check_channel
from .event import check_event_type, data_text
from .helpers import parse_event_id

if t.TYPE_CHECKING:
    from flask import Flask

    from .brokers.base import Broker
    from .metrics import Metrics

__all__ = [
    "EvStream",
    "Settings",
    "DEFAULTS",
    "FROM_CONFIG",
    "metrics_for",
    "settings_for",
    "subscribers",
]

#: Every config key the extension reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "EVSTREAM_HEARTBEAT": 15.0,
    "EVSTREAM_RETRY": None,
    "EVSTREAM_START_WAIT": 0.1,
    "EVSTREAM_MAX_BUFFER": 64 * 1024,
    "EVSTREAM_BROKER_URL": "memory://",
    "EVSTREAM_HISTORY": 1000,
    "EVSTREAM_QUEUE_SIZE": 1000,
    "EVSTREAM_MAX_CHANNELS": 32,
    "EVSTREAM_REDIS_PREFIX": "evstream",
    "EVSTREAM_REDIS_MAX_CONNECTIONS": 4,
    "EVSTREAM_REDIS_TIMEOUT": 10.0,
    "EVSTREAM_CHANNEL_TTL": 86400.0,
    "EVSTREAM_RESUME_TTL": 600.0,
    "EVSTREAM_RESUME_MAX_AGE": 3600.0,
    "EVSTREAM_RESUME_MAX_EVENTS": 10_000,
    "EVSTREAM_RESUME_MAX_BYTES": 16 * 1024 * 1024,
    "EVSTREAM_URL_PREFIX": "/evstream",
    "EVSTREAM_METRICS": False,
    "EVSTREAM_METRICS_PATH": None,
}


class _FromConfig:
    def __repr__(self) -> str:
        return "<from the app config>"


#: A default that means "take this from the app's ``EVSTREAM_*`` config".
FROM_CONFIG: t.Any = _FromConfig()


#: The longest interval accepted, in seconds (a day).
MAX_SECONDS = 86400.0


def _number(key: str, value: t.Any, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= MAX_SECONDS  # also refuses NaN
    ):
        allowed = f"a number of seconds from 0 to {MAX_SECONDS:g}" + (
            " or None" if allow_none else ""
        )
        raise ValueError(f"{key} must be {allowed}, got {value!r}")
    return float(value)


def check_retry(key: str, value: t.Any) -> int | None:
    """Validate a retry value in milliseconds (an int >= 0, or ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{key} must be an integer number of milliseconds >= 0 or None, got {value!r}"
        )
    return value


def check_heartbeat(key: str, value: t.Any) -> float | None:
    """Validate a heartbeat interval: seconds > 0, or ``None``/``0`` for off."""
    seconds = _number(key, value, allow_none=True)
    return seconds or None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated configuration of one app.

    :param heartbeat: seconds of silence before a keep-alive comment, or
        ``None`` for none.
    :param retry: the default ``retry`` of every stream, in ms, or ``None``.
    :param start_wait: seconds the view waits for a stream's first event
        before it sends the headers.
    :param max_buffer: bytes a stream may have pending before its generator
        waits for the client; also the most one write of a replay holds.
    :param broker_url: the broker's URL (``memory://``, ``redis://...``,
        ``redis+cluster://...``).
    :param history: events kept per channel for replay, and the most one
        replay sends.
    :param queue_size: live events a subscriber may have waiting before it
        is cut off.
    :param max_channels: channels one subscription may read.
    :param redis_prefix: the prefix of the Redis keys (two apps can share a
        Redis database with different prefixes).
    :param redis_max_connections: the Redis connection pool's size per
        process, for publishing and history (the reader has one more).
    :param redis_timeout: seconds a Redis command, a connection attempt or a
        wait for a pooled connection may take.
    :param channel_ttl: seconds a channel's history is kept after its last
        publish (``None``: forever).
    :param resume_ttl: seconds a resumable stream's log is kept after its
        last event (its ending).
    :param resume_max_age: seconds a resumable stream's generator may run
        in all; then it is stopped and the stream ends ``expired``.
    :param resume_max_events: events one resumable stream may log (its
        entries of its own included); past it the stream ends ``failed``.
    :param resume_max_bytes: bytes of data one resumable stream may log.
    :param url_prefix: where the extension's own routes are: the resume
        URLs ``<prefix>/streams/<id>`` and ``<prefix>/evstream.js``.
    :param metrics: count Prometheus metrics (:mod:`flask_evstream.metrics`).
    :param metrics_path: where the extension serves them (``GET``), or
        ``None`` for no route (mount :func:`~flask_evstream.metrics.metrics_view`
        yourself).
    """

    heartbeat: float | None = 15.0
    retry: int | None = None
    start_wait: float = 0.1
    max_buffer: int = 64 * 1024
    broker_url: str = "memory://"
    history: int = 1000
    queue_size: int = 1000
    max_channels: int = 32
    redis_prefix: str = "evstream"
    redis_max_connections: int = 4
    redis_timeout: float = 10.0
    channel_ttl: float | None = 86400.0
    resume_ttl: float = 600.0
    resume_max_age: float = 3600.0
    resume_max_events: int = 10_000
    resume_max_bytes: int = 16 * 1024 * 1024
    url_prefix: str = "/evstream"
    metrics: bool = False
    metrics_path: str | None = None

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        """Read and validate the ``EVSTREAM_*`` keys of a Flask config.

        :raises ValueError: a key has a value that is not allowed; the
            message names the key and shows the value.
        """

        def get(key: str) -> t.Any:
            return config.get(key, DEFAULTS[key])

        def integer(key: str, low: int, what: str) -> int:
            value = get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"{key} must be an integer number of {what} >= {low}, got {value!r}"
                )
            return value

        broker_url = get("EVSTREAM_BROKER_URL")
        if not isinstance(broker_url, str) or "://" not in broker_url:
            raise ValueError(
                "EVSTREAM_BROKER_URL must be a URL such as memory:// or"
                f" redis://localhost:6379/0, got {broker_url!r}"
            )
        start_wait = _number("EVSTREAM_START_WAIT", get("EVSTREAM_START_WAIT"), allow_none=False)
        assert start_wait is not None
        redis_timeout = _number(
            "EVSTREAM_REDIS_TIMEOUT", get("EVSTREAM_REDIS_TIMEOUT"), allow_none=False
        )
        if not redis_timeout:
            raise ValueError(
                "EVSTREAM_REDIS_TIMEOUT must be a number of seconds above 0,"
                f" got {get('EVSTREAM_REDIS_TIMEOUT')!r}"
            )
        ttl = get("EVSTREAM_CHANNEL_TTL")
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not 0 <= ttl <= MAX_TTL  # also refuses NaN
        ):
            raise ValueError(
                f"EVSTREAM_CHANNEL_TTL must be a number of seconds from 0 to {MAX_TTL:g}"
                f" (0 or None: keep forever), got {ttl!r}"
            )

        def positive_seconds(key: str) -> float:
            value = _number(key, get(key), allow_none=False)
            if not value:
                raise ValueError(
                    f"{key} must be a number of seconds above 0 and at most {MAX_SECONDS:g},"
                    f" got {get(key)!r}"
                )
            return value

        def path(key: str, example: str) -> str:
            value = get(key)
            if (
                not isinstance(value, str)
                or not value.startswith("/")
                or value.endswith("/")
                or not all(c.isalnum() or c in "/-_." for c in value)
            ):
                raise ValueError(
                    f"{key} must be a path like {example} (a leading /, no"
                    f" trailing /, letters, digits and /-_.), got {value!r}"
                )
            return value

        url_prefix = path("EVSTREAM_URL_PREFIX", "/evstream")
        metrics = get("EVSTREAM_METRICS")
        if not isinstance(metrics, bool):
            raise ValueError(f"EVSTREAM_METRICS must be True or False, got {metrics!r}")
        metrics_path = None
        if get("EVSTREAM_METRICS_PATH") is not None:
            metrics_path = path("EVSTREAM_METRICS_PATH", "/metrics")
            if not metrics:
                raise ValueError(
                    f"EVSTREAM_METRICS_PATH is {metrics_path!r} but EVSTREAM_METRICS is"
                    " False: set EVSTREAM_METRICS = True to serve metrics, or"
                    " EVSTREAM_METRICS_PATH = None"
                )
        prefix = get("EVSTREAM_REDIS_PREFIX")
        if (
            not isinstance(prefix, str)
            or not 0 < len(prefix) <= 100
            or not prefix.isprintable()
            or any(c in prefix for c in " {}")
        ):
            raise ValueError(
                "EVSTREAM_REDIS_PREFIX must be 1 to 100 printable characters without"
                f" spaces or braces, got {prefix!r}"
            )
        return cls(
            heartbeat=check_heartbeat("EVSTREAM_HEARTBEAT", get("EVSTREAM_HEARTBEAT")),
            retry=check_retry("EVSTREAM_RETRY", get("EVSTREAM_RETRY")),
            start_wait=start_wait,
            max_buffer=integer("EVSTREAM_MAX_BUFFER", 1, "bytes"),
            broker_url=broker_url,
            history=integer("EVSTREAM_HISTORY", 0, "events"),
            queue_size=integer("EVSTREAM_QUEUE_SIZE", 1, "events"),
            max_channels=integer("EVSTREAM_MAX_CHANNELS", 1, "channels"),
            redis_prefix=prefix,
            redis_max_connections=integer("EVSTREAM_REDIS_MAX_CONNECTIONS", 1, "connections"),
            redis_timeout=redis_timeout,
            channel_ttl=float(ttl) if ttl else None,
            resume_ttl=positive_seconds("EVSTREAM_RESUME_TTL"),
            resume_max_age=positive_seconds("EVSTREAM_RESUME_MAX_AGE"),
            resume_max_events=integer("EVSTREAM_RESUME_MAX_EVENTS", 10, "events"),
            resume_max_bytes=integer("EVSTREAM_RESUME_MAX_BYTES", 1024, "bytes"),
            url_prefix=url_prefix,
            metrics=metrics,
            metrics_path=metrics_path,
        )

    def make_broker(self) -> Broker:
        """Make the broker :attr:`broker_url` names, with these settings."""
        from .brokers import broker_from_url

        return broker_from_url(
            self.broker_url,
            history=self.history,
            prefix=self.redis_prefix,
            max_connections=self.redis_max_connections,
            timeout=self.redis_timeout,
            channel_ttl=self.channel_ttl,
        )


@dataclasses.dataclass
class _State:
    """What ``app.extensions["evstream"]`` holds for one app."""

    #: The extension registered on the app.
    extension: EvStream
    #: The validated configuration.
    settings: Settings
    #: Where the app publishes and subscribes.
    broker: Broker
    #: Where resumable streams keep their logs (made at first use).
    log_broker: Broker | None = None
    #: The metrics this app counts (``EVSTREAM_METRICS``), or ``None``.
    metrics: Metrics | None = None

    def logs(self) -> Broker:
        """The broker of resumable streams' logs: the app's broker URL with
        the key prefix ``<prefix>:rs``, the resume TTL and event cap."""
        if self.log_broker is None:
            from .brokers import broker_from_url

            s = self.settings
            # The Redis brokers have a URL; any other kind: logs in this process.
            # (Not imported here: an install without the redis extra has none.)
            url = getattr(self.broker, "url", None) or "memory://"
            self.log_broker = broker_from_url(
                url,
                history=s.resume_max_events,
                prefix=f"{s.redis_prefix}:rs",
                max_connections=s.redis_max_connections,
                timeout=s.redis_timeout,
                channel_ttl=s.resume_ttl,
            )
        return self.log_broker


def subscribers(app: Flask | None = None) -> int:
    """Return the number of channel subscriptions open in this process.

    A subscription counts from its first iteration (when it registers with
    the broker) until it is closed; a stream closes its subscription when it
    closes. A number that grows while :func:`~flask_evstream.live_streams`
    does not is a leak.

    :param app: count only the subscriptions of this app's broker.

    .. versionadded:: 0.2
    """
    if app is not None:
        state = app.extensions.get("evstream")
        return 0 if state is None else state.broker.hub.count()
    from .brokers.base import all_brokers

    return sum(broker.hub.count() for broker in all_brokers())


def metrics_for(app: Flask) -> Metrics | None:
    """Return the metrics ``app`` counts: ``None`` unless the extension is
    registered with ``EVSTREAM_METRICS = True``."""
    state = app.extensions.get("evstream")
    return None if state is None else state.metrics


def settings_for(app: Flask) -> Settings:
    """Return the settings of ``app``: validated at ``init_app``, or read from
    its config now when the extension was not registered (``sse_route`` works
    without it)."""
    state = app.extensions.get("evstream")
    if state is not None:
        return state.settings  # type: ignore[no-any-return]
    return Settings.from_config(app.config)


class EvStream:
    """The flask-evstream extension: configuration and broadcast channels.

    ``sse_route`` works without it. Registering it validates the
    configuration once at start-up and gives the app a broker for
    :meth:`publish` and :meth:`subscribe`::

        sse = EvStream(app)
        # or, with an app factory:
        sse = EvStream()
        sse.init_app(app)

        @app.get("/news")
        @sse_route()
        def news():
            return sse.subscribe("news", last_event_id=last_event_id())

    Each app's state (settings and broker) lives in
    ``app.extensions["evstream"]``; one ``EvStream`` may serve several apps
    (an app factory called more than once), and :meth:`publish` then finds
    the app from the app context.

    :param app: an app to register on now.
    :param broker: a broker instance for every app this registers on,
        instead of the one ``EVSTREAM_BROKER_URL`` names (a broker of your
        own, or one shared by several apps). The caller closes it.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
        The ``broker`` parameter.
    """

    def __init__(self, app: Flask | None = None, *, broker: Broker | None = None) -> None:
        from .brokers.base import Broker

        if broker is not None and not isinstance(broker, Broker):
            raise TypeError(
                "broker must be a flask_evstream.brokers.Broker instance,"
                f" got {type(broker).__name__}: {broker!r}"
            )
        self._authorize: t.Callable[[str], bool] | None = None
        self._broker = broker
        # The apps registered, weakly: to find the app where no app context
        # is pushed (a thread, a CLI command) when there is exactly one.
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: write the defaults of missing config keys,
        validate them and make the app's broker.

        Config keys read (defaults in :data:`DEFAULTS`):

        - ``EVSTREAM_HEARTBEAT``: seconds of silence before a keep-alive
          comment is written; ``None`` or ``0`` disables it. Default 15.
        - ``EVSTREAM_RETRY``: the ``retry`` (ms) every stream opens with,
          unless ``sse_route(retry=...)`` says otherwise. Default ``None``.
        - ``EVSTREAM_START_WAIT``: seconds a stream view waits for its first
          event before sending the headers; an error raised in that time
          (``abort(403)``) becomes the response. Default 0.1.
        - ``EVSTREAM_MAX_BUFFER``: bytes a stream may have pending for a
          slow client before its generator is paused. Default 65536.
        - ``EVSTREAM_BROKER_URL``: ``memory://`` (one process),
          ``redis://host:port/db`` (Redis Streams, many workers and hosts)
          or ``redis+cluster://host:port/`` (a Redis Cluster). Default
          ``memory://``.
        - ``EVSTREAM_HISTORY``: events kept per channel for replay after
          ``Last-Event-ID``. Default 1000.
        - ``EVSTREAM_QUEUE_SIZE``: live events a subscriber may have waiting;
          a client that falls further behind is cut off and replays from
          history when it reconnects. Default 1000.
        - ``EVSTREAM_MAX_CHANNELS``: channels one subscription may read; a
          request for more gets a 400. Default 32.
        - ``EVSTREAM_REDIS_PREFIX``: the prefix of every Redis key (two apps
          share one Redis database with two prefixes). Default
          ``"evstream"``.
        - ``EVSTREAM_REDIS_MAX_CONNECTIONS``: the Redis pool's size per
          process (publish, history); the reader has one more. Default 4.
        - ``EVSTREAM_REDIS_TIMEOUT``: seconds a Redis command, connection
          attempt or wait for a pooled connection may take. Default 10.
        - ``EVSTREAM_CHANNEL_TTL``: seconds a channel's history is kept after
          its last publish (Redis keys expire, the memory broker frees it);
          ``0`` or ``None`` keeps it forever. Default 86400 (a day).
        - ``EVSTREAM_RESUME_TTL``: seconds a resumable stream's log is kept
          after its last event. Default 600.
        - ``EVSTREAM_RESUME_MAX_AGE``: seconds a resumable stream's
          generator may run in all (then it ends ``expired``). Default 3600.
        - ``EVSTREAM_RESUME_MAX_EVENTS``: entries one resumable stream's log
          may hold (then it ends ``failed``). Default 10000.
        - ``EVSTREAM_RESUME_MAX_BYTES``: bytes of events one resumable
          stream's log may hold. Default 16777216 (16 MiB).
        - ``EVSTREAM_URL_PREFIX``: where the resume URLs
          (``<prefix>/streams/<id>``) and ``<prefix>/evstream.js`` are.
          Default ``"/evstream"``.
        - ``EVSTREAM_METRICS``: count Prometheus metrics (see :doc:`/metrics`;
          needs the ``metrics`` extra, ``prometheus_client``). Default
          ``False``: nothing is counted and ``prometheus_client`` is not
          imported.
        - ``EVSTREAM_METRICS_PATH``: a path such as ``/metrics`` where the
          extension serves the metrics (needs ``EVSTREAM_METRICS``); default
          ``None``, no route: mount
          :func:`flask_evstream.metrics.metrics_view` where you choose.

        What each key allows: :doc:`/config`.

        The broker is closed when a gunicorn worker with
        :mod:`flask_evstream.gunicorn_conf` exits; elsewhere call
        ``app.extensions["evstream"].broker.close()`` when you are done.

        :raises RuntimeError: the extension is already registered on ``app``,
            or ``EVSTREAM_METRICS`` is on and ``prometheus_client`` was
            imported before ``PROMETHEUS_MULTIPROC_DIR`` was set.
        :raises ValueError: a config value is not allowed, or
            ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a directory.
        :raises ImportError: ``EVSTREAM_METRICS`` is on and
            ``prometheus_client`` is not installed (the ``metrics`` extra).
        """
        if "evstream" in app.extensions:
            raise RuntimeError(
                "flask-evstream is already registered on this app. Create one"
                " EvStream per app, or call init_app(app) once."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_config(app.config)
        metrics = None
        if settings.metrics:
            from .metrics import process_metrics

            metrics = process_metrics()
        broker = self._broker if self._broker is not None else settings.make_broker()
        state = _State(self, settings, broker, metrics=metrics)
        state.logs()
        app.extensions["evstream"] = state
        self._apps.add(app)
        from .resumable import script_view, stream_view

        app.add_url_rule(
            f"{settings.url_prefix}/streams/<sid>",
            "evstream_stream",
            stream_view,
            methods=["GET", "DELETE"],
        )
        app.add_url_rule(f"{settings.url_prefix}/evstream.js", "evstream_js", script_view)
        if settings.metrics_path is not None:
            from .metrics import metrics_view

            app.add_url_rule(settings.metrics_path, "evstream_metrics", metrics_view)

    def _app(self) -> Flask:
        """The app a call is for: the current app, or the only one registered."""
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            state = app.extensions.get("evstream")
            if state is None or state.extension is not self:
                raise RuntimeError(
                    "This EvStream is not registered on the current app."
                    " Did you forget to call init_app(app)?"
                )
            return app
        apps = list(self._apps)
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise RuntimeError(
                "This EvStream is not registered on any app. Did you forget to call init_app(app)?"
            )
        raise RuntimeError(
            f"This EvStream is registered on several apps: push an app context"
            f" (with app.app_context():) to say which one of the {len(apps)}."
        )

    def _state(self) -> _State:
        return self._app().extensions["evstream"]  # type: ignore[no-any-return]

    @property
    def broker(self) -> Broker:
        """The broker of the current app (or of the only app)."""
        return self._state().broker

    def cancel(self, stream_id: str) -> bool:
        """Stop the generator of resumable stream ``stream_id``, wherever it
        runs (another worker or host sharing the broker): its ``finally``
        runs and its readers get the ``cancelled`` ending.

        :return: whether the stream is known (its log exists).
        :raises BrokerUnavailable: the broker cannot be reached.

        .. versionadded:: 0.2
        """
        from .resumable import cancel, check_stream_id

        sid = check_stream_id(stream_id)
        return sid is not None and cancel(self._state().logs(), sid)

    def authorize(self, func: t.Callable[[str], bool]) -> t.Callable[[str], bool]:
        """Register the function that decides whether the current request
        may read a channel; use it as a decorator::

            @sse.authorize
            def may_read(channel: str) -> bool:
                return channel == "news" or current_user.is_admin

        :meth:`subscribe` calls it, in the request, for each channel; a
        ``False`` answers 403 before the stream starts.
        """
        if not callable(func):
            raise TypeError(f"authorize takes a function, got {func!r}")
        self._authorize = func
        return func

    def publish(
        self,
        channel: str,
        data: t.Any,
        *,
        event: str | None = None,
        id: int | str | None = None,
    ) -> str:
        """Publish an event to every subscriber of ``channel``, in every
        process that shares the broker.

        Callable from a request, a thread, a greenlet or a CLI command (with
        one app registered, no app context is needed). The data is encoded
        once, whatever the number of subscribers.

        :param channel: the channel, 1 to 200 printable characters.
        :param data: a str (sent as is) or a JSON-serializable value, encoded
            as :class:`~flask_evstream.Event` encodes it, with the JSON
            provider of the app published for (the current app, or the only
            one) when it is the app's own.
        :param event: the event type.
        :param id: an explicit id: an integer higher than every id the
            broker gave before (to follow an outside sequence); by default
            the next one.
        :return: the event's id, as clients see it (``Last-Event-ID``).
        :raises TypeError, ValueError: a bad channel, data, event or id.
        """
        check_channel(channel)
        app = self._app()
        text = data_text(data, app)
        if event is not None:
            check_event_type(event)
        number: int | None = None
        if id is not None:
            if isinstance(id, (int, str)) and not isinstance(id, bool):
                number = parse_event_id(str(id))
            if number is None or number < 1:
                raise ValueError(f"publish id must be a positive integer below 10**18, got {id!r}")
        state: _State = app.extensions["evstream"]
        return str(state.broker.publish(channel, text, event=event, id=number))

    def subscribe(
        self,
        channels: str | t.Iterable[str],
        *,
        last_event_id: str | None = None,
    ) -> Subscription:
        """Subscribe to one channel or several.

        Return it from an ``sse_route`` view (the lean way: no extra greenlet
        per client) or ``yield from`` it in a generator. It first replays the
        history after ``last_event_id`` (an :data:`~flask_evstream.channels.GAP_EVENT`
        event comes first when that id is older than the history kept), then
        yields live events, each with its id.

        :param channels: a channel name or an iterable of names.
        :param last_event_id: where the client stopped, usually
            :func:`~flask_evstream.last_event_id`; ``None`` to start live.
        :raises TypeError, ValueError: a bad channel name, or more channels
            than ``EVSTREAM_MAX_CHANNELS`` outside a request.
        :raises werkzeug.exceptions.BadRequest: in a request, more channels
            than ``EVSTREAM_MAX_CHANNELS`` (a 400 that says so).
        :raises werkzeug.exceptions.Forbidden: the authorize hook refused a
            channel.
        """
        state = self._state()
        names = (channels,) if isinstance(channels, str) else tuple(channels)
        if not names:
            raise ValueError("subscribe needs at least one channel")
        names = tuple(dict.fromkeys(check_channel(c) for c in names))
        limit = state.settings.max_channels
        message = None
        if len(names) > limit:
            message = (
                f"A subscription may read at most {limit} channels"
                f" (EVSTREAM_MAX_CHANNELS), got {len(names)}"
            )
        else:
            try:
                state.broker.check_channels(names)
            except ValueError as e:
                message = str(e)[0].upper() + str(e)[1:]
        if message is not None:
            if has_request_context():
                raise BadRequest(description=message)
            raise ValueError(message)
        if self._authorize is not None:
            if not has_request_context():
                raise RuntimeError("subscribe with an authorize hook must be called in a request")
            for name in names:
                if not self._authorize(name):
                    abort(403)
        return Subscription(
            state.broker,
            names,
            after=parse_event_id(last_event_id),
            last_event_id=last_event_id,
            queue_size=state.settings.queue_size,
            max_buffer=state.settings.max_buffer,
            metrics=state.metrics,
        )
