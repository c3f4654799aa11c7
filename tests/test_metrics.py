"""Prometheus metrics, scraped from a real gunicorn with two gevent workers in
prometheus_client's multiprocess mode (workers sharing a real redis-server),
parsed with prometheus_client's own text parser, and compared with what the
clients read; a worker killed and replaced; metrics off costs no import and
no route."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sseclient import SSEClient

from flask_evstream import EvStream, sse_route
from flask_evstream.brokers.base import BrokerUnavailable

from .conftest import ROOT, Server
from .redis_server import RedisServer
from .sockets import RawStream

APP = "tests.apps.metrics:app"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (a KeyError when it is missing: every metric is
    exposed from the start)."""
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(server: Server) -> tuple[int, Samples]:
    """The worker that answered, and what it answered."""
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return int(response.headers["x-pid"]), samples_of(response.text)


#: How long the helpers below try to reach both workers: a worker still
#: booting leaves every request to the other one meanwhile.
BOTH_WITHIN = 30.0


def scrape_both(server: Server, check: t.Callable[[Samples], None]) -> None:
    """Scrape until both workers have answered; ``check`` every answer."""
    pids = set()
    deadline = time.monotonic() + BOTH_WITHIN
    scrapes = 0
    while time.monotonic() < deadline and scrapes < 1000:
        pid, samples = scrape(server)
        scrapes += 1
        check(samples)
        pids.add(pid)
        if len(pids) == 2:
            return
        time.sleep(0.01)
    raise AssertionError(f"only worker(s) {pids} answered {scrapes} scrapes")


def wait_for(
    server: Server, condition: t.Callable[[Samples], bool], timeout: float = 10
) -> Samples:
    """Scrape until ``condition`` holds; fail with the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        _, samples = scrape(server)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            evstream = {k: v for k, v in samples.items() if k[0].startswith("evstream")}
            raise AssertionError(f"not within {timeout} s: {evstream}")
        time.sleep(0.05)


def publish(server: Server, channel: str, data: t.Any) -> str:
    response = httpx.post(f"{server.url}/publish/{channel}", json={"data": data}, timeout=10)
    response.raise_for_status()
    return str(response.json()["id"])


#: What the test app's stream views spin (busy, no greenlet switch) first:
#: a burst of requests 10 ms apart spreads over both workers, as a busy
#: worker does not accept (a worker that waits for I/O takes most of them).
SPIN = "spin=0.05"


def open_burst(server: Server, paths: list[str]) -> list[RawStream]:
    """Open a stream per path, 10 ms apart, then read their heads."""
    streams = []
    for path in paths:
        sep = "&" if "?" in path else "?"
        streams.append(RawStream(server.url, f"{path}{sep}{SPIN}", wait=False))
        time.sleep(0.01)
    for stream in streams:
        stream.read_head()
        assert stream.status == 200
    return streams


def open_on_both_workers(server: Server, paths: list[str]) -> list[tuple[str, RawStream]]:
    """Open bursts of ``paths`` until both workers hold some (for at most
    :data:`BOTH_WITHIN` seconds and 50 bursts)."""
    opened: list[tuple[str, RawStream]] = []
    deadline = time.monotonic() + BOTH_WITHIN
    for _ in range(50):
        opened += zip(paths, open_burst(server, paths))
        if len({stream.headers["x-pid"] for _, stream in opened}) == 2:
            return opened
        if time.monotonic() > deadline:
            break
    for _, stream in opened:
        stream.close()
    raise AssertionError(f"{len(opened)} streams, all on one worker")


@pytest.fixture
def prom_dir(tmp_path: Path) -> Path:
    path = tmp_path / "prometheus"
    path.mkdir()
    return path


@pytest.fixture
def serve(
    start_server: t.Callable[..., Server], redis_server: RedisServer, prom_dir: Path
) -> t.Callable[..., Server]:
    """Start the metrics app: two workers, multiprocess mode, one Redis."""
    redis_server.admin.flushall()

    def start(**env: str) -> Server:
        return start_server(
            APP,
            workers=2,
            env={
                "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
                "EVSTREAM_BROKER_URL": redis_server.url,
                **env,
            },
        )

    return start


def seed_earlier_run(prom_dir: Path) -> None:
    """What a crashed earlier run leaves: a dead worker's 5 open streams and
    7 events sent."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    gauge = MmapedDict(str(prom_dir / "gauge_livesum_999999.db"))
    gauge.write_value(
        mmap_key(
            "evstream_open_streams", "evstream_open_streams", (), (), "Stream responses open."
        ),
        5.0,
        0.0,
    )
    gauge.close()
    counter = MmapedDict(str(prom_dir / "counter_999999.db"))
    counter.write_value(
        mmap_key("evstream_events_sent", "evstream_events_sent_total", (), (), "Events written."),
        7.0,
        0.0,
    )
    counter.close()
    # The seed is what the collector would add in.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(prom_dir))
    assert registry.get_sample_value("evstream_open_streams") == 5.0
    assert registry.get_sample_value("evstream_events_sent_total") == 7.0


@pytest.mark.server
def test_open_streams_and_subscriptions_are_the_servers_totals(
    serve: t.Callable[..., Server], prom_dir: Path
) -> None:
    """Streams held on both workers: every scrape, whichever worker answers
    it, counts them all (and not what an earlier run left in the directory);
    each stream the client closes is one disconnect."""
    seed_earlier_run(prom_dir)
    server = serve(TEST_HEARTBEAT="0.3")
    streams = [stream for _, stream in open_on_both_workers(server, ["/hold"] * 6)]
    n = len(streams)

    def all_open(samples: Samples) -> bool:
        return (
            value(samples, "evstream_open_streams") == n
            and value(samples, "evstream_subscriptions") == n
            and value(samples, "evstream_events_sent_total") == n
        )

    wait_for(server, all_open)

    def check(samples: Samples) -> None:
        assert value(samples, "evstream_open_streams") == n
        assert value(samples, "evstream_subscriptions") == n
        assert value(samples, "evstream_events_sent_total") == n  # the pid events
        assert value(samples, "evstream_disconnects_total") == 0

    scrape_both(server, check)

    for stream in streams:
        stream.close()
    samples = wait_for(
        server,
        lambda s: (
            value(s, "evstream_open_streams") == 0
            and value(s, "evstream_subscriptions") == 0
            and value(s, "evstream_disconnects_total") == n
        ),
    )
    assert value(samples, "evstream_events_sent_total") == n


@pytest.mark.server
def test_events_bytes_heartbeats_and_first_events_match_what_clients_read(
    serve: t.Callable[..., Server],
) -> None:
    """Streams on both workers, read to their end as raw bytes: the events
    (parsed by sseclient-py), the bytes and the heartbeat lines the clients
    got are exactly the scraped counts; one time-to-first-event observation
    per stream, measured from the view's call: a view that takes 0.7 s is
    above the 0.5 bucket (from the stream's start, it would be among the fast)."""
    server = serve(TEST_HEARTBEAT="0.2")
    paths = ["/events?n=60", "/events?n=4&gap=0.45", "/events?n=1", "/events?n=2&wait=0.7"]
    opened = open_on_both_workers(server, paths * 2)
    received_events = received_bytes = heartbeats = 0
    for path, stream in opened:
        body = stream.read_to_end()
        stream.close()
        events = list(SSEClient([body]).events())
        assert len(events) == int(path.split("n=")[1].split("&")[0])
        received_events += len(events)
        received_bytes += len(body)
        heartbeats += sum(1 for line in body.split(b"\n") if line == b": ping")
    streams = len(opened)
    late = sum("wait" in path for path, _ in opened)
    assert heartbeats > 0

    def check(samples: Samples) -> None:
        assert value(samples, "evstream_events_sent_total") == received_events
        assert value(samples, "evstream_sent_bytes_total") == received_bytes
        assert value(samples, "evstream_heartbeats_sent_total") == heartbeats
        assert value(samples, "evstream_time_to_first_event_seconds_count") == streams
        assert value(samples, "evstream_time_to_first_event_seconds_bucket", le="+Inf") == streams
        in_time = value(samples, "evstream_time_to_first_event_seconds_bucket", le="0.5")
        assert in_time == streams - late
        assert value(samples, "evstream_time_to_first_event_seconds_sum") >= 0.6 * late
        assert value(samples, "evstream_disconnects_total") == 0
        assert value(samples, "evstream_open_streams") == 0

    scrape_both(server, check)


@pytest.mark.server
def test_replays_gaps_and_a_slow_client_cut_off_are_counted(
    serve: t.Callable[..., Server],
) -> None:
    """A replay past the history (3 events) sends the gap event; a replay
    within it does not; a live subscription replays nothing. A client that
    stops reading is cut off: counted as such, not as a disconnect."""
    server = serve(TEST_HISTORY="3", TEST_QUEUE_SIZE="5", TEST_HEARTBEAT="0.3")
    ids = [publish(server, "news", {"n": n}) for n in range(6)]
    gapped = RawStream(server.url, "/sub?c=news", headers={"Last-Event-ID": ids[0]})
    assert b"event: evstream-gap" in gapped.read_until(b"\n\n")
    assert [gapped.read_until(b"\n\n").split(b"\n")[0] for _ in range(3)] == [
        f"id: {i}".encode() for i in ids[3:]
    ]
    replayed = RawStream(server.url, "/sub?c=news", headers={"Last-Event-ID": ids[4]})
    assert replayed.read_until(b"\n\n").startswith(f"id: {ids[5]}\n".encode())
    live = RawStream(server.url, "/sub?c=news")
    samples = wait_for(
        server,
        lambda s: (
            value(s, "evstream_subscriptions") == 3 and value(s, "evstream_events_sent_total") == 5
        ),
    )
    assert value(samples, "evstream_replays_total") == 2
    assert value(samples, "evstream_gaps_total") == 1
    # Live events, one per write (the gap event and the replays came in bulk).
    more = [publish(server, "news", {"n": n}) for n in (6, 7)]
    for stream in (gapped, replayed, live):
        for event_id in more:
            assert f"id: {event_id}\n".encode() in stream.read_until(b"\n\n")
    wait_for(server, lambda s: value(s, "evstream_events_sent_total") == 11)
    for stream in (gapped, replayed, live):
        stream.close()
    wait_for(server, lambda s: value(s, "evstream_disconnects_total") == 3)

    slow = RawStream(server.url, "/sub?c=firehose")  # never read again
    fast = RawStream(server.url, "/sub?c=firehose")
    wait_for(server, lambda s: value(s, "evstream_subscriptions") == 2)
    payload = "x" * 300_000  # 12 MB in all: more than loopback socket buffers hold
    for i in range(40):
        publish(server, "firehose", {"i": i, "pad": payload})
        block = fast.read_until(b"\n\n")
        assert json.loads(block.split(b"data: ")[1])["i"] == i
    samples = wait_for(
        server,
        lambda s: (
            value(s, "evstream_open_streams") == 1 and value(s, "evstream_subscriptions") == 1
        ),
    )
    assert value(samples, "evstream_cut_offs_total", reason="slow_client") == 1
    assert value(samples, "evstream_cut_offs_total", reason="reader_behind") == 0
    assert value(samples, "evstream_disconnects_total") == 3  # the cut-off is not one
    fast.close()
    slow.close()
    wait_for(server, lambda s: value(s, "evstream_disconnects_total") == 4)


@pytest.mark.server
def test_producers_and_resumes_by_outcome(serve: t.Callable[..., Server]) -> None:
    """A resumable answer's producer is counted while it runs; each resume
    is counted by its outcome, on the resume URL and on the route; the
    events and bytes of resumable streams are what their clients read."""
    from httpx_sse import connect_sse

    server = serve()
    with httpx.Client(timeout=20) as client:
        body = {"n": 30, "delay": 0.05}
        with connect_sse(client, "POST", f"{server.url}/chat", json=body) as source:
            location = source.response.headers["content-location"]
            seen = []
            for event in source.iter_sse():
                seen.append(event.id)
                if len(seen) == 3:
                    break
        wait_for(server, lambda s: value(s, "evstream_producers") == 1)
        headers = {"Last-Event-ID": seen[-1]}
        with connect_sse(client, "GET", server.url + location, headers=headers) as source:
            rest = [event.data for event in source.iter_sse()]
        assert rest == [f"token {i}" for i in range(3, 30)]
        last = f"{seen[-1].rpartition('.')[0]}.30"
        done = client.get(server.url + location, headers={"Last-Event-ID": last})
        assert done.status_code == 204
        unknown = client.get(f"{server.url}/evstream/streams/{'A' * 24}")
        assert unknown.status_code == 404
        refused = client.get(server.url + location, headers={"X-User": "mallory"})
        assert refused.status_code == 403
        # On the route, a resume of an unknown stream starts a new one.
        with connect_sse(
            client, "GET", f"{server.url}/feed", headers={"Last-Event-ID": f"{'B' * 24}.2"}
        ) as source:
            assert [event.data for event in source.iter_sse()] == ["item 0", "item 1", "item 2"]

    def check(samples: Samples) -> None:
        outcomes = {
            o: value(samples, "evstream_resumes_total", outcome=o)
            for o in ("resumed", "done", "not_found", "forbidden", "unavailable")
        }
        assert outcomes == {
            "resumed": 1,
            "done": 1,
            "not_found": 2,
            "forbidden": 1,
            "unavailable": 0,
        }
        assert value(samples, "evstream_producers") == 0

    wait_for(server, lambda s: value(s, "evstream_producers") == 0)
    scrape_both(server, check)

    # Exact counts of resumable streams: the first response (fed by its
    # producer), a resume inside a run and one from the start (both read
    # from the log), whatever worker serves each.
    before = wait_for(server, lambda s: value(s, "evstream_open_streams") == 0)
    streams = [RawStream(server.url, "/feed?n=50")]
    location = streams[0].headers["content-location"]
    bodies = [streams[0].read_to_end()]
    sid = location.rpartition("/")[2]
    for headers in ({"Last-Event-ID": f"{sid}.17"}, {}):
        streams.append(RawStream(server.url, location, headers=headers))
        bodies.append(streams[-1].read_to_end())
    for stream in streams:
        stream.close()
    counts = [len(list(SSEClient([body]).events())) for body in bodies]
    assert counts == [50, 33, 50]

    def exact(samples: Samples) -> None:
        for name, delta in (
            ("evstream_events_sent_total", sum(counts)),
            ("evstream_sent_bytes_total", sum(map(len, bodies))),
        ):
            assert value(samples, name) - value(before, name) == delta, name

    scrape_both(server, exact)


@pytest.mark.server
def test_a_killed_workers_gauges_go_and_a_stopped_server_leaves_none(
    serve: t.Callable[..., Server], prom_dir: Path
) -> None:
    """SIGKILL a worker holding streams: its gauges can never count down, so
    the master's child_exit removes them (mark_process_dead) and the scrape
    counts the other worker's streams only; what it counted stays. At the
    server's stop no live gauge is left."""
    server = serve(TEST_HEARTBEAT="0.3")
    streams = [stream for _, stream in open_on_both_workers(server, ["/hold"] * 4)]
    by_pid = collections.Counter(int(s.headers["x-pid"]) for s in streams)
    wait_for(
        server,
        lambda s: (
            value(s, "evstream_open_streams") == len(streams)
            and value(s, "evstream_events_sent_total") == len(streams)
        ),
    )
    victim, survivor = by_pid
    assert (prom_dir / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    samples = wait_for(server, lambda s: value(s, "evstream_open_streams") == by_pid[survivor])
    assert value(samples, "evstream_subscriptions") == by_pid[survivor]
    assert value(samples, "evstream_events_sent_total") == len(streams)  # the victim's stay
    assert not (prom_dir / f"gauge_livesum_{victim}.db").exists()
    assert (prom_dir / f"counter_{victim}.db").exists()
    # The replacement is up (a stop while it boots would wait for it).
    deadline = time.monotonic() + 20
    while server.stats()["pid"] in by_pid:
        assert time.monotonic() < deadline, "no replacement worker"
        time.sleep(0.05)
    for stream in streams:
        stream.close()
    server.stop()
    assert "Traceback" not in server.log(), server.log()
    assert sorted(prom_dir.glob("gauge_live*")) == []
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(prom_dir))
    assert registry.get_sample_value("evstream_open_streams") in (None, 0.0)
    assert registry.get_sample_value("evstream_events_sent_total") == len(streams)


@pytest.mark.server
def test_several_workers_without_a_multiprocess_dir_are_warned_about(
    start_server: t.Callable[..., Server],
) -> None:
    """Each worker would answer a scrape with its own numbers: both say so."""
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    server = start_server(APP, workers=2)
    deadline = time.monotonic() + 20
    while server.log().count("without PROMETHEUS_MULTIPROC_DIR") < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_the_metrics_api() -> None:
    """What the module defines for users is ``__all__``; prometheus_client's
    names it uses are not re-exported."""
    import types

    from flask_evstream import metrics

    assert metrics.__all__ == [
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
    from flask_evstream import event, response

    def imported(name: str, value: t.Any) -> bool:
        if isinstance(value, types.ModuleType) or name == "annotations":
            return True
        if getattr(value, "__module__", metrics.__name__) != metrics.__name__:
            return True
        return any(getattr(module, name, None) is value for module in (event, response))

    defined = {
        name
        for name, value in vars(metrics).items()
        if not name.startswith("_") and not imported(name, value)
    }
    assert defined == set(metrics.__all__)


OFF = """
import sys
from flask import Flask
from flask_evstream import EvStream, sse_route
from flask_evstream import gunicorn_conf

app = Flask("off")
sse = EvStream(app)

@app.get("/s")
@sse_route
def s():
    yield "one"
    yield from sse.subscribe("news", last_event_id="0")

@app.get("/r")
@sse_route(resumable=True)
def r():
    yield "one"

client = app.test_client()
response = client.get("/s")
assert b"data: one" in next(response.response)
response.close()
assert client.get("/r").data.count(b"data: one") == 1
assert client.get("/metrics").status_code == 404
class Worker:
    pid = 999999
gunicorn_conf.child_exit(None, Worker())
rules = {(rule.rule, rule.endpoint) for rule in app.url_map.iter_rules()}
assert not any("metrics" in r or "metrics" in e for r, e in rules), rules
loaded = sorted(m for m in sys.modules if m.startswith(("prometheus", "flask_evstream.metrics")))
assert not loaded, loaded
print("ok")
"""


def test_metrics_off_adds_no_route_and_imports_no_prometheus_client() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", OFF], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"EVSTREAM_METRICS": "yes"}, "EVSTREAM_METRICS must be True or False, got 'yes'"),
        ({"EVSTREAM_METRICS": 1}, "EVSTREAM_METRICS must be True or False, got 1"),
        (
            {"EVSTREAM_METRICS": True, "EVSTREAM_METRICS_PATH": "metrics"},
            "EVSTREAM_METRICS_PATH must be a path like /metrics",
        ),
        (
            {"EVSTREAM_METRICS": True, "EVSTREAM_METRICS_PATH": "/metrics/"},
            "got '/metrics/'",
        ),
        (
            {"EVSTREAM_METRICS_PATH": "/metrics"},
            "EVSTREAM_METRICS_PATH is '/metrics' but EVSTREAM_METRICS is False",
        ),
    ],
)
def test_metrics_config_is_validated(config: dict[str, t.Any], message: str) -> None:
    app = Flask("bad")
    app.config.update(config)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EvStream(app)
    assert "evstream" not in app.extensions


def test_a_multiprocess_dir_that_cannot_work_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Set but missing or empty: a ValueError naming it. Set after prometheus_client
    was imported (this process imported it without): a RuntimeError, since
    each worker would count for itself."""
    app = Flask("mp")
    app.config["EVSTREAM_METRICS"] = True
    for path in (str(tmp_path / "missing"), ""):
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", path)
        with pytest.raises(
            ValueError, match=f"PROMETHEUS_MULTIPROC_DIR must be an existing directory.*got '{path}"
        ):
            EvStream(app)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="imported before it was set"):
        EvStream(app)


def test_in_process_metrics_are_shared_by_two_apps_and_count_an_unreachable_broker() -> None:
    """The test client, no gunicorn: the default registry, one set of metrics
    for both apps of the process; a resume while the log broker is down is
    ``unavailable`` (a 503)."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        found = REGISTRY.get_sample_value(name, labels)
        assert found is not None, name
        return found

    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(EVSTREAM_METRICS=True)
        EvStream(app)

        @app.get("/s")
        @sse_route
        def s() -> t.Iterator[str]:
            yield from ("a", "b")

        apps.append(app)
    assert apps[0].extensions["evstream"].metrics is apps[1].extensions["evstream"].metrics
    events = sample("evstream_events_sent_total")
    for app in apps:
        assert app.test_client().get("/s").data == b"data: a\n\ndata: b\n\n"
    assert sample("evstream_events_sent_total") == events + 4

    state = apps[0].extensions["evstream"]

    def down(channel: str) -> bool:
        raise BrokerUnavailable("down")

    state.logs().exists = down
    unavailable = sample("evstream_resumes_total", outcome="unavailable")
    response = apps[0].test_client().get(f"/evstream/streams/{'C' * 24}")
    assert response.status_code == 503
    assert sample("evstream_resumes_total", outcome="unavailable") == unavailable + 1
