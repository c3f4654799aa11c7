"""Prometheus metrics: streams, subscriptions and resumable answers.

Opt-in: ``EVSTREAM_METRICS = True`` with the ``metrics`` extra
(``pip install "flask-evstream[metrics]"``, which brings the official
``prometheus_client``). Nothing imports this module, nor ``prometheus_client``,
while it is off. The metrics and how to serve them are in :doc:`/metrics`;
the choices made here, and why:

- **One set per process.** The metrics live in ``prometheus_client``'s
  default registry (:data:`prometheus_client.REGISTRY`), made once, by the
  first ``init_app`` that asks for them, and shared by every app of the
  process that does (a Prometheus target is a process, as for
  :func:`~flask_evstream.live_streams`): a second set would collide in that
  registry, and the app's own metrics, there too, are exposed with ours.
- **Several gunicorn workers: prometheus_client's multiprocess mode.** With
  ``PROMETHEUS_MULTIPROC_DIR`` set in the server's environment, each worker
  writes its values to files in that directory and :func:`metrics_view`
  merges every worker's files (:class:`~prometheus_client.multiprocess.MultiProcessCollector`
  on a fresh :class:`~prometheus_client.CollectorRegistry`), so whichever
  worker answers a scrape, it answers with the server's totals. Gauges are
  ``livesum``: the sum over the workers alive, a dead worker's part removed
  when the master calls :func:`~prometheus_client.multiprocess.mark_process_dead`
  (:mod:`flask_evstream.gunicorn_conf`'s ``child_exit`` does); counters and
  the histogram keep what dead workers counted. The directory must be
  emptied when the server starts (the config's ``on_starting`` does).
- **Served only where you say.** Metrics tell a lot about a server; no
  route is added unless ``EVSTREAM_METRICS_PATH`` names one. Mount
  :func:`metrics_view` yourself to put it behind your own access check, or
  hand :func:`exposition_registry` to another exposition.
- **Nothing paid when off.** Stream responses are the plain
  :class:`~flask_evstream.response.EventStream`; per event, nothing is
  counted; per chunk, a source stores its number of events (one attribute);
  what happens once per stream, subscription, producer or resume checks one
  attribute for ``None``.
- **Counted per write, not per event.** With metrics on, stream responses
  are :class:`MeteredStream`: each write (all the events pending, in one
  chunk) counts its bytes and its events, as the source said when it made
  the chunk (its ``taken``, set once per chunk: a pump's items, a
  subscription's events, a resumable log's runs' events). Scanning the
  chunk for the blank lines that end events cost about 1 ns per byte, a
  tenth of the fastest stream's own cost per event. A write counts when the
  server comes back for the next chunk (its write returned); a stream
  closed with a write outstanding lost its client: a disconnect.
- **No per-channel or per-stream labels.** A label value per channel or
  stream makes a time series per value, kept for the life of the process
  (Mercure dropped its per-topic labels for that). The only labels are small
  fixed sets: a resume's ``outcome`` (:data:`RESUME_OUTCOMES`) and a cut-off's
  ``reason`` (:data:`CUT_OFF_REASONS`).

.. versionadded:: 0.2
"""

from __future__ import annotations

import os
import threading
import time
import typing as t

from flask import Response, current_app, request

from .event import HEARTBEAT, OPEN
from .response import STARTED_KEY, EventStream

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client import values as _values
    from prometheus_client.exposition import make_wsgi_app
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError as e:  # pragma: no cover - the metrics extra is missing
    raise ImportError(
        "EVSTREAM_METRICS = True needs prometheus_client:"
        f' pip install "flask-evstream[metrics]" ({e})'
    ) from e

if t.TYPE_CHECKING:
    from flask import Flask

    from .pump import Source

__all__ = [
    "CUT_OFF_REASONS",
    "FIRST_EVENT_BUCKETS",
    "MULTIPROC_DIR_ENV",
    "RESUME_OUTCOMES",
    "MeteredStream",
    "Metrics",
    "counting",
    "exposition_registry",
    "metrics_view",
    "multiprocess_dir",
    "process_metrics",
]

#: The environment variable that turns on prometheus_client's multiprocess
#: mode: the directory where each process writes its values.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The outcomes of a resume (label ``outcome`` of ``evstream_resumes_total``):
#: ``resumed`` (the stream is read after the client's position), ``done``
#: (it ended ``done`` with nothing after that position: 204), ``not_found``
#: (no such stream: a 404 on the resume URL; on the route, a new stream
#: starts), ``forbidden`` (the authorize hook refused: 403) and
#: ``unavailable`` (the broker cannot be reached: 503).
RESUME_OUTCOMES = ("resumed", "done", "not_found", "forbidden", "unavailable")

#: Why a subscription was cut off (label ``reason`` of
#: ``evstream_cut_offs_total``): ``slow_client`` (its client fell
#: ``EVSTREAM_QUEUE_SIZE`` events behind) or ``reader_behind`` (this
#: process's Redis reader fell behind the channel's history).
CUT_OFF_REASONS = ("slow_client", "reader_behind")

#: The buckets of ``evstream_time_to_first_event_seconds``, in seconds: a
#: model's first token takes a fraction of a second to seconds; a
#: subscription with nothing to replay waits for the next publish.
FIRST_EVENT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR``), or ``None`` when it is not set (set but
    empty is set, as prometheus_client takes it)."""
    return os.environ.get(MULTIPROC_DIR_ENV)


class Metrics:
    """The metrics one process counts.

    The app uses the one :func:`process_metrics` makes; make one of your own
    only with a registry of your own (tests), as two sets cannot share a
    registry.

    :param registry: where the metrics are registered.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        # Gauges: "livesum", the sum over the processes alive (a dead
        # worker's part goes with mark_process_dead).
        #: Stream responses open: from the view's return to the close.
        self.open_streams = Gauge(
            "evstream_open_streams",
            "Stream responses open.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        #: Channel subscriptions registered with the broker (``subscribe``).
        self.subscriptions = Gauge(
            "evstream_subscriptions",
            "Channel subscriptions open (registered with the broker).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        #: Detached producers of resumable streams running.
        self.producers = Gauge(
            "evstream_producers",
            "Detached producers of resumable streams running.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        #: Events written to clients (replays and gap events included).
        self.events_sent = Counter(
            "evstream_events_sent",
            "Events written to clients.",
            registry=registry,
        )
        #: Bytes of stream bodies written (events, heartbeats, retry fields;
        #: not HTTP headers nor chunked framing).
        self.sent_bytes = Counter(
            "evstream_sent_bytes",
            "Bytes of stream bodies written to clients.",
            registry=registry,
        )
        #: Heartbeat comments written.
        self.heartbeats_sent = Counter(
            "evstream_heartbeats_sent",
            "Heartbeat comments written to clients.",
            registry=registry,
        )
        #: Streams whose client went away (a write failed or never returned).
        self.disconnects = Counter(
            "evstream_disconnects",
            "Streams closed because their client went away.",
            registry=registry,
        )
        #: Subscriptions cut off, by reason (:data:`CUT_OFF_REASONS`).
        self.cut_offs = Counter(
            "evstream_cut_offs",
            "Subscriptions cut off, by reason.",
            ["reason"],
            registry=registry,
        )
        #: Subscriptions that replayed the history after a ``Last-Event-ID``.
        self.replays = Counter(
            "evstream_replays",
            "Replays of channel history after a Last-Event-ID.",
            registry=registry,
        )
        #: Gap events sent: events may be missing for that client.
        self.gaps = Counter(
            "evstream_gaps",
            "Gap events sent (the history no longer reached the client's position).",
            registry=registry,
        )
        #: Resumes of resumable streams, by outcome (:data:`RESUME_OUTCOMES`).
        self.resumes = Counter(
            "evstream_resumes",
            "Resumes of resumable streams, by outcome.",
            ["outcome"],
            registry=registry,
        )
        #: Seconds from the view's call to the first event written.
        self.time_to_first_event = Histogram(
            "evstream_time_to_first_event_seconds",
            "Seconds from the view's call to the stream's first event written.",
            buckets=FIRST_EVENT_BUCKETS,
            registry=registry,
        )
        # Every label value made now: each series exists (at 0) from the
        # start, and a bad value is a KeyError here rather than a new series.
        self._cut_offs = {r: self.cut_offs.labels(reason=r) for r in CUT_OFF_REASONS}
        self._resumes = {o: self.resumes.labels(outcome=o) for o in RESUME_OUTCOMES}

    def cut_off(self, reason: str) -> None:
        """Count a subscription cut off; ``reason`` is one of :data:`CUT_OFF_REASONS`."""
        self._cut_offs[reason].inc()

    def resume(self, outcome: str) -> None:
        """Count a resume; ``outcome`` is one of :data:`RESUME_OUTCOMES`."""
        self._resumes[outcome].inc()

    def stream(
        self,
        source: Source,
        *,
        app: Flask,
        retry: int | None,
        heartbeat: float | None,
        keep_context: bool,
    ) -> MeteredStream:
        """Make the body of a stream response that counts what it writes."""
        started = request.environ.get(STARTED_KEY)
        return MeteredStream(
            source,
            metrics=self,
            started=started if isinstance(started, float) else time.monotonic(),
            app=app,
            retry=retry,
            heartbeat=heartbeat,
            keep_context=keep_context,
        )


class MeteredStream(EventStream):
    """The body of a stream response, counting its writes.

    A chunk the server took counts (its bytes; the source's events in it, or
    a heartbeat) when the server comes back for the next one, that is when
    its write returned; the
    first chunk with an event observes the time to the first event. Closed
    with a chunk outstanding (the write failed, or the server gave up), the
    stream lost its client: a disconnect, unless the stream dropped the
    client itself (cut off for falling behind).
    """

    __slots__ = ("_metrics", "_unsent", "_unsent_events", "_started", "_dropped")

    def __init__(
        self,
        source: Source,
        *,
        metrics: Metrics,
        started: float | None,
        app: Flask,
        retry: int | None,
        heartbeat: float | None,
        keep_context: bool = True,
    ) -> None:
        self._metrics = metrics
        self._unsent: bytes | None = None  # handed to the server, not yet written
        self._unsent_events = 0  # the events in it
        self._started = started  # None once the first event is out
        self._dropped = False
        super().__init__(
            source, app=app, retry=retry, heartbeat=heartbeat, keep_context=keep_context
        )
        metrics.open_streams.inc()

    def __next__(self) -> bytes:
        unsent = self._unsent
        if unsent is not None:
            self._unsent = None
            self._count(unsent, self._unsent_events)
        opening = self._opening
        chunk = EventStream.__next__(self)
        self._unsent = chunk
        # The source's events, unless this is a heartbeat or the opening alone.
        self._unsent_events = (
            0 if chunk is HEARTBEAT or chunk is OPEN or chunk is opening else self._source.taken
        )
        return chunk

    def _count(self, chunk: bytes, events: int) -> None:
        metrics = self._metrics
        metrics.sent_bytes.inc(len(chunk))
        if chunk is HEARTBEAT:
            metrics.heartbeats_sent.inc()
        elif events:
            metrics.events_sent.inc(events)
            started = self._started
            if started is not None:
                self._started = None
                metrics.time_to_first_event.observe(time.monotonic() - started)

    def _abort(self) -> None:
        self._dropped = True
        super()._abort()

    def close(self) -> None:
        if self._closed:
            return
        unsent, self._unsent = self._unsent, None
        try:
            if unsent is not None and not self._dropped:
                self._metrics.disconnects.inc()
            self._metrics.open_streams.dec()
        finally:
            super().close()


# The metrics of this process: prometheus_client's default registry is
# process-wide, and refuses a second metric of the same name, so the set is
# made once and shared by every app that turns metrics on.
_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def _check_multiprocess() -> None:
    path = multiprocess_dir()
    if path is None:
        return
    if not os.path.isdir(path):
        raise ValueError(
            f"{MULTIPROC_DIR_ENV} must be an existing directory (emptied at server"
            f" start) for prometheus_client's multiprocess mode, got {path!r}"
        )
    if _values.ValueClass is _values.MutexValue:
        raise RuntimeError(
            f"{MULTIPROC_DIR_ENV} is set, but prometheus_client was imported before"
            " it was set: each worker would count for itself and a scrape would show"
            " one worker's numbers. Set it in the server's environment, before"
            " anything imports prometheus_client."
        )


def process_metrics() -> Metrics:
    """Return the metrics of this process, made at the first call.

    :raises ValueError: ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a
        directory.
    :raises RuntimeError: ``PROMETHEUS_MULTIPROC_DIR`` is set but
        ``prometheus_client`` was imported before it was (its values would
        stay in the process).
    """
    global _metrics
    _check_multiprocess()
    with _metrics_lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


def counting() -> bool:
    """Return whether this process counts metrics (an app turned them on)."""
    return _metrics is not None


def exposition_registry() -> CollectorRegistry:
    """Return the registry a scrape should collect.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set): a new
    :class:`~prometheus_client.CollectorRegistry` with a
    :class:`~prometheus_client.multiprocess.MultiProcessCollector`, which
    merges the files of every process, alive or dead, at each collection.
    Otherwise prometheus_client's default registry, with its process and
    platform metrics and any metrics of the app's own.
    """
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def metrics_view() -> Response:
    """A Flask view that answers a scrape with :func:`exposition_registry`,
    through prometheus_client's own exposition (text format, OpenMetrics when
    the scraper asks for it, gzip when it accepts it).

    ``EVSTREAM_METRICS_PATH`` registers it; to guard it, register it
    yourself instead::

        app.add_url_rule("/metrics", view_func=admin_only(metrics_view))
    """
    wsgi = make_wsgi_app(exposition_registry())
    # from_app makes an instance of the class it is called on (typed as werkzeug's).
    response = t.cast(
        Response, current_app.response_class.from_app(wsgi, request.environ, buffered=True)
    )
    response.headers["Cache-Control"] = "no-store"
    return response
