"""Through a real nginx reverse proxy with its default proxy buffering on.

Measured with nginx 1.22: events pass nginx one by one even when it buffers
(it forwards what it has read whenever gunicorn pauses). What
``X-Accel-Buffering: no`` keeps is backpressure: without it nginx reads the
stream ahead of a client that does not keep up, into memory and a temp
file."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource, connect_sse

from flask_evstream.extension import DEFAULTS

from .conftest import ROOT, Server, free_port
from .docs_samples import sample
from .processes import end
from .sockets import RawStream

pytestmark = pytest.mark.server

CONFIG = """
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    {log}
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{servers}
}}
"""

#: The documented location block (docs/deploy.rst includes this file).
LOCATION = (ROOT / "docs" / "_snippets" / "nginx-location.conf").read_text()
assert LOCATION.count("http://127.0.0.1:8000") == 1


def location(upstream: str, extra: str = "") -> str:
    """The documented location, proxying to ``upstream``, with ``extra``
    (which replaces the documented ``proxy_read_timeout`` if it sets one)."""
    block = LOCATION.replace("http://127.0.0.1:8000", upstream)
    if "proxy_read_timeout" in extra:
        block = "\n".join(line for line in block.splitlines() if "proxy_read_timeout" not in line)
    body, brace = block.rstrip().rsplit("}", 1)
    return f"{body}    {extra}\n}}{brace}"


SERVER = """
    server {{
        listen 127.0.0.1:{port};
        {location}
    }}
"""

#: An access log line: the protocol the client spoke, nginx's connection
#: number, the status and the request (for tests that read what reached nginx).
LOG_FORMAT = "log_format evstream '$server_protocol $connection $status $request_uri';"


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    """Debian's nginx in the foreground, with a config made of ``servers``
    (one or more ``server`` blocks) in a fresh ``http`` block.

    With no ``servers``, one plain-HTTP proxy to ``upstream`` on a free port,
    with ``extra`` in its ``location``. ``ready`` is a URL that answers
    once nginx is up (default ``<url>/stats``); :attr:`access_log` has a
    line per finished request in :data:`LOG_FORMAT`.
    """

    def __init__(
        self,
        upstream: str,
        tmp: Path,
        extra: str = "",
        *,
        servers: str | None = None,
        ready: str | None = None,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if servers is None:
            servers = SERVER.format(port=self.port, location=location(upstream, extra))
        self.access_log = tmp / "access.log"
        self.error_log = tmp / "error.log"
        log = f"{LOG_FORMAT}\n    access_log {self.access_log} evstream;"
        conf = tmp / "nginx.conf"
        conf.write_text(CONFIG.format(tmp=tmp, log=log, servers=servers))
        # nginx -t first: a bad config fails here with nginx's own message.
        check = subprocess.run(
            [nginx_binary(), "-t", "-q", "-c", str(conf)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t rejected {conf}:\n{check.stderr}")
        self.proc = subprocess.Popen([nginx_binary(), "-c", str(conf)])
        ready = ready or self.url + "/stats"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(ready, timeout=2)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start, see {self.error_log}") from None
                time.sleep(0.05)

    def log_lines(self) -> list[str]:
        """The access log so far (nginx writes a line when a request ends)."""
        if not self.access_log.exists():
            return []
        return self.access_log.read_text().splitlines()

    def stop(self) -> None:
        end(self.proc, 10)


@pytest.fixture
def nginx(gevent_server: Server, tmp_path: Path) -> t.Iterator[t.Callable[[str], Nginx]]:
    started: list[Nginx] = []

    def start(extra: str = "") -> Nginx:
        proxy = Nginx(gevent_server.url, tmp_path / f"nginx{len(started)}", extra)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def lockstep_through(proxy_url: str, server: Server, timeout: float) -> int:
    """Return how many lockstep events arrived before a read timed out."""
    name = f"nginx{time.monotonic_ns()}"
    stream = RawStream(proxy_url, f"/lockstep/{name}?n=3", timeout=timeout)
    got = 0
    try:
        for i in range(3):
            block, _ = stream.read_event()
            assert block == f'data: {{"i":{i}}}\n\n'.encode()
            got += 1
            httpx.post(f"{server.url}/release/{name}-{i}")
    except TimeoutError:
        pass
    finally:
        stream.close()
        for i in range(3):  # let the generator finish either way
            httpx.post(f"{server.url}/release/{name}-{i}")
    return got


def test_events_pass_nginx_unbuffered(
    nginx: t.Callable[[str], Nginx], gevent_server: Server
) -> None:
    proxy = nginx("")
    assert lockstep_through(proxy.url, gevent_server, timeout=5) == 3


def test_heartbeats_and_headers_through_nginx(
    nginx: t.Callable[[str], Nginx], gevent_server: Server
) -> None:
    proxy = nginx("")
    stream = RawStream(proxy.url, "/quiet")
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    # nginx acts on X-Accel-Buffering and does not pass it on.
    assert "x-accel-buffering" not in stream.headers
    assert stream.read_until(b":\n") == b":\n"
    assert stream.read_until(b": ping\n") == b": ping\n"
    stream.close()


def test_heartbeats_keep_a_stream_past_proxy_read_timeout(
    nginx: t.Callable[[str], Nginx], gevent_server: Server
) -> None:
    # nginx closes an upstream that sends nothing for proxy_read_timeout (1 s
    # here); the server's heartbeat (0.5 s) keeps a quiet stream open.
    proxy = nginx("proxy_read_timeout 1s;")
    quiet = RawStream(proxy.url, "/quiet", timeout=10)
    deadline = time.monotonic() + 4  # four times the proxy's timeout
    pings = 0
    while time.monotonic() < deadline:
        assert quiet.read_until(b": ping\n").endswith(b": ping\n")
        pings += 1
    quiet.close()
    assert pings >= 4
    # The control: a stream with no heartbeat for a minute is cut by nginx.
    silent = RawStream(proxy.url, "/silent", timeout=30)
    assert silent.status == 200
    assert silent.read_until(b":\n") == b":\n"
    with pytest.raises(EOFError):
        silent.read_until(b"late")
    silent.close()


def test_last_event_id_and_the_resume_url_pass_through_nginx(
    nginx: t.Callable[[str], Nginx], gevent_server: Server
) -> None:
    proxy = nginx("")
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        # Last-Event-ID reaches the app: it continues after step 7.
        response = http.get("/resume", headers={"Last-Event-ID": "7"})
        assert b'data: {"step":8}' in response.content
        assert b'data: {"step":7}' not in response.content
        # A resumable answer through nginx, then resumed by GET through it.
        with connect_sse(http, "POST", "/answer?n=6") as source:
            location = source.response.headers["content-location"]
            events = list(source.iter_sse())
        assert [e.data for e in events] == [f'{{"i":{i}}}' for i in range(6)]
        with connect_sse(http, "GET", location, headers={"Last-Event-ID": events[2].id}) as source:
            rest = list(source.iter_sse())
        assert [(e.id, e.data) for e in rest] == [(e.id, e.data) for e in events[3:]]


#: A stream far larger than the sockets between gunicorn and a client can
#: hold (64 MiB: 512 events of 128 KiB).
BULK_N, BULK_SIZE = 512, 128 * 1024


def held_back(proxy_url: str, server: Server) -> bool:
    """Open a ``/bulk`` stream through the proxy and read nothing: return
    whether its generator is held back (True) or ran to its end because
    the proxy took the whole stream (False). Then read the stream (with
    httpx-sse) and check that every event arrived, whole and in order."""
    name = f"bulk{time.monotonic_ns()}"
    made_url = f"{server.url}/bulk-made/{name}"
    with httpx.Client(timeout=30) as http:
        url = f"{proxy_url}/bulk/{name}?n={BULK_N}&size={BULK_SIZE}"
        with http.stream("GET", url) as response:
            assert response.status_code == 200
            # Until the generator ends, or makes nothing more for a second.
            made: list[int] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                made.append(http.get(made_url).json()["made"])
                if made[-1] == BULK_N or made[-3:] == [made[-1]] * 3:
                    break
                time.sleep(0.5)
            events = list(EventSource(response).iter_sse())
    assert [e.id for e in events] == [str(i) for i in range(BULK_N)]
    assert all(e.data == "x" * BULK_SIZE for e in events)
    return made[-1] < BULK_N


def test_a_client_that_reads_nothing_holds_its_generator_back_through_nginx(
    nginx: t.Callable[[str], Nginx], gevent_server: Server
) -> None:
    # X-Accel-Buffering: no keeps nginx from reading ahead of the client, so
    # the stream's own bound (EVSTREAM_MAX_BUFFER) holds the generator back.
    assert held_back(nginx("").url, gevent_server)
    # The control: nginx ignoring the header reads the whole 64 MiB from
    # gunicorn into its buffers and a temp file, whatever the client takes.
    assert not held_back(nginx("proxy_ignore_headers X-Accel-Buffering;").url, gevent_server)


#: What ingress-nginx writes into a location for each annotation that
#: deploy.rst shows (``rootfs/etc/nginx/template/nginx.tmpl`` of
#: kubernetes/ingress-nginx: ``proxy_read_timeout {{ ... ReadTimeout }}s;``,
#: ``proxy_buffering {{ ... ProxyBuffering }};``).
INGRESS_DIRECTIVES = {
    "nginx.ingress.kubernetes.io/proxy-buffering": "proxy_buffering {};",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "proxy_read_timeout {}s;",
}


def ingress_annotations() -> dict[str, str]:
    """The annotations of deploy.rst's ``yaml-ingress`` sample."""
    text = sample("yaml-ingress")
    assert text.splitlines()[:2] == ["metadata:", "  annotations:"], text
    found = re.findall(r'^    ([\w./-]+): "([^"]*)"$', text, re.M)
    assert len(found) == len(text.splitlines()) - 2, text
    return dict(found)


def test_ingress_nginx_annotations_do_without_the_header(
    nginx: t.Callable[[str], Nginx], gevent_server: Server
) -> None:
    annotations = ingress_annotations()
    assert sorted(annotations) == sorted(INGRESS_DIRECTIVES)
    # Longer than the heartbeat, as the proxy_read_timeout must be.
    assert (
        int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        > (DEFAULTS["EVSTREAM_HEARTBEAT"])
    )
    rendered = " ".join(INGRESS_DIRECTIVES[k].format(v) for k, v in annotations.items())
    # nginx ignores X-Accel-Buffering, as if a layer had dropped it (the
    # control is the test above): what the annotations render does its job.
    proxy = nginx(f"proxy_ignore_headers X-Accel-Buffering; {rendered}")
    assert held_back(proxy.url, gevent_server)
    assert lockstep_through(proxy.url, gevent_server, timeout=5) == 3
