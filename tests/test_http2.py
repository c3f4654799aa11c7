"""HTTP/2 at the proxy: nginx terminates TLS and speaks HTTP/2 to the
browser, HTTP/1.1 to gunicorn, with the config docs/deploy.rst shows.

Headless Chromium trusts the test certificate by its public key only
(``--ignore-certificate-errors-spki-list``), not every certificate. One
page opens ten ``EventSource`` streams to its own origin:

* over HTTP/2 all ten are open at once: each stream's first event leaves
  the server only after the server saw all ten requests (a barrier, so the
  proof does not depend on timing), and nginx logged all ten on the page's
  one connection;
* over plain HTTP/1.1 (the same nginx, same location, no TLS) the browser
  opens six connections per origin and holds the other streams back: the
  server sees exactly six requests while those six stay open, and one more
  each time the page closes one.

And gunicorn's own HTTP/2 (``--http-protocols h2,h1``, no proxy) serves the
streams of one connection one after another, which is why the docs
recommend the proxy instead.
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

import gunicorn
import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Error, Page, Playwright, sync_playwright

from .conftest import ROOT, Server, free_port
from .test_browser import CHROMIUM_ARGS
from .test_nginx import Nginx

pytestmark = pytest.mark.server

#: The nginx server block the docs show (``literalinclude``d there).
DOCS_CONF = ROOT / "docs" / "_snippets" / "nginx-http2.conf"
STREAMS = 10
#: Chromium's connections per origin over HTTP/1.1 (its socket pool limit).
HTTP1_LIMIT = 6


@dataclass
class Tls:
    cert: Path  # the leaf, then the CA
    key: Path
    context: ssl.SSLContext  # a client's, trusting the CA
    #: base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo: what
    #: ``--ignore-certificate-errors-spki-list`` takes.
    spki: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    der = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Tls(cert, key, context, base64.b64encode(hashlib.sha256(der).digest()).decode())


def replace_once(text: str, changes: dict[str, str]) -> str:
    """Apply each change to a text that holds its old string exactly once
    (so an edit of the docs' snippet breaks the test loudly, not quietly)."""
    for old, new in changes.items():
        assert text.count(old) == 1, f"{old!r} is not in {DOCS_CONF} exactly once"
        text = text.replace(old, new)
    return text


def servers_from_docs(tls: Tls, upstream: str, tls_port: int, plain_port: int) -> str:
    """The docs' server block with this machine's ports, certificate and
    upstream, and a plain-HTTP copy of it (no TLS, so HTTP/1.1)."""
    docs = DOCS_CONF.read_text()
    local = {
        "server_name example.com;": "server_name 127.0.0.1;",
        "http://127.0.0.1:8000": upstream,
    }
    https = replace_once(
        docs,
        {
            "listen 443 ssl http2;": f"listen 127.0.0.1:{tls_port} ssl http2;",
            "/etc/ssl/example.com.pem": str(tls.cert),
            "/etc/ssl/example.com.key": str(tls.key),
            **local,
        },
    )
    plain = replace_once(
        docs, {"listen 443 ssl http2;": f"listen 127.0.0.1:{plain_port};", **local}
    )
    plain = re.sub(r"(?m)^\s*(#|ssl_certificate).*\n", "", plain)
    assert "ssl" not in plain, plain
    return https + plain


@dataclass
class Proxy:
    nginx: Nginx
    https: str  # TLS and HTTP/2
    http: str  # plain HTTP/1.1, same location


@pytest.fixture(scope="module")
def proxy(
    gevent_server: Server, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[Proxy]:
    tls_port, plain_port = free_port(), free_port()
    servers = servers_from_docs(tls, gevent_server.url, tls_port, plain_port)
    plain = f"http://127.0.0.1:{plain_port}"
    nginx = Nginx(
        gevent_server.url,
        tmp_path_factory.mktemp("nginx-h2"),
        servers=servers,
        ready=plain + "/stats",
    )
    yield Proxy(nginx, f"https://127.0.0.1:{tls_port}", plain)
    nginx.stop()


@pytest.fixture(scope="module")
def playwright() -> t.Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, tls: Tls) -> t.Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        # Trust this one key (the test certificate's), nothing broader.
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={tls.spki}"],
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> t.Iterator[Page]:
    context = browser.new_context()  # its own connections
    yield context.new_page()
    context.close()


OPEN_STREAMS = """([url, count]) => {
  window.got = [];
  window.sources = [];
  for (let i = 0; i < count; i++) {
    const source = new EventSource(url);
    source.onmessage = (e) => window.got.push({i, ...JSON.parse(e.data)});
    source.addEventListener("timeout", (e) => window.got.push({i, timeout: e.data}));
    window.sources.push(source);
  }
}"""

PROTOCOL = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
STATES = "window.sources.map((s) => s.readyState)"
CONNECTING, OPEN, CLOSED = 0, 1, 2


def barrier_stats(server: Server, name: str) -> dict[str, int]:
    stats = httpx.get(f"{server.url}/barrier-stats/{name}", timeout=10, verify=server.verify)
    return stats.json()  # type: ignore[no-any-return]


def wait_barrier(
    server: Server, name: str, check: t.Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    """Poll the server's count of ``name``'s requests until ``check`` holds
    (a deadline only to fail, never to pass)."""
    deadline = time.monotonic() + 30
    stats = barrier_stats(server, name)
    while not check(stats) and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = barrier_stats(server, name)
    return stats


def logged(nginx: Nginx, name: str, count: int) -> list[list[str]]:
    """nginx's access log lines of ``name``'s requests, once there are
    ``count`` (it writes a line when a request ends)."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line.split() for line in nginx.log_lines() if f"/barrier/{name}?" in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_docs_show_the_config_this_test_runs() -> None:
    deploy = (ROOT / "docs" / "deploy.rst").read_text()
    assert ".. literalinclude:: _snippets/nginx-http2.conf" in deploy


def test_chromium_trusts_the_test_key_only(
    playwright: Playwright, browser: Browser, proxy: Proxy
) -> None:
    """Without the flag Chromium refuses the origin: the tests' trust is
    that one key, not a blanket ignore."""
    plain = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    try:
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            plain.new_page().goto(proxy.https + "/page")
    finally:
        plain.close()
    page = browser.new_page()
    try:
        assert page.goto(proxy.https + "/page").status == 200  # type: ignore[union-attr]
    finally:
        page.close()


def test_ten_streams_at_once_over_http2(page: Page, proxy: Proxy, gevent_server: Server) -> None:
    name = f"h2-{time.monotonic_ns()}"
    page.goto(proxy.https + "/page")
    assert page.evaluate(PROTOCOL) == "h2"
    page.evaluate(OPEN_STREAMS, [f"/barrier/{name}?n={STREAMS}", STREAMS])
    # Each first event leaves only once the server has all ten requests.
    page.wait_for_function(f"window.got.length === {STREAMS}", timeout=30_000)
    got = page.evaluate("window.got")
    assert sorted(e["i"] for e in got) == list(range(STREAMS))
    assert sorted(e["arrival"] for e in got) == list(range(1, STREAMS + 1))
    assert {e["arrived"] for e in got} == {STREAMS}
    assert page.evaluate(STATES) == [OPEN] * STREAMS
    assert barrier_stats(gevent_server, name) == {"arrived": STREAMS, "held": STREAMS}

    page.evaluate("window.sources.forEach((s) => s.close())")
    stats = wait_barrier(gevent_server, name, lambda s: s["held"] == 0)
    assert stats == {"arrived": STREAMS, "held": 0}
    # nginx: ten HTTP/2 requests on one connection, the page's own.
    lines = logged(proxy.nginx, name, STREAMS)
    assert len(lines) == STREAMS
    assert {(protocol, connection) for protocol, connection, _, _ in lines} == {
        ("HTTP/2.0", page_connection(proxy.nginx))
    }


def page_connection(nginx: Nginx) -> str:
    """The nginx connection number of the last ``/page`` request."""
    pages = [line.split() for line in nginx.log_lines() if line.endswith(" /page")]
    return pages[-1][1]


def test_six_streams_at_most_over_http1(page: Page, proxy: Proxy, gevent_server: Server) -> None:
    name = f"h1-{time.monotonic_ns()}"
    page.goto(proxy.http + "/page")
    assert page.evaluate(PROTOCOL) == "http/1.1"
    page.evaluate(OPEN_STREAMS, [f"/barrier/{name}?n=1", STREAMS])
    page.wait_for_function(f"window.got.length >= {HTTP1_LIMIT}", timeout=30_000)
    # Six streams are open and held; the browser keeps the rest back.
    assert barrier_stats(gevent_server, name) == {"arrived": HTTP1_LIMIT, "held": HTTP1_LIMIT}
    states = page.evaluate(STATES)
    assert sorted(states) == [CONNECTING] * (STREAMS - HTTP1_LIMIT) + [OPEN] * HTTP1_LIMIT
    assert len(page.evaluate("window.got")) == HTTP1_LIMIT

    # Each stream the page closes lets exactly one more through.
    for closed in (1, 2):
        page.evaluate(f"window.sources[{states.index(OPEN)}].close()")
        opened = HTTP1_LIMIT + closed
        page.wait_for_function(f"window.got.length >= {opened}", timeout=30_000)
        stats = wait_barrier(gevent_server, name, lambda s: s["held"] == HTTP1_LIMIT)
        assert stats == {"arrived": opened, "held": HTTP1_LIMIT}
        states = page.evaluate(STATES)
        assert states.count(OPEN) == HTTP1_LIMIT
        assert states.count(CLOSED) == closed
        assert states.count(CONNECTING) == STREAMS - opened
        assert len(page.evaluate("window.got")) == opened

    # The held-back ones first, so that no close lets one of them through.
    page.evaluate(
        "window.sources.filter((s) => s.readyState === EventSource.CONNECTING)"
        ".forEach((s) => s.close())"
    )
    page.evaluate("window.sources.forEach((s) => s.close())")
    stats = wait_barrier(gevent_server, name, lambda s: s["held"] == 0)
    assert stats == {"arrived": HTTP1_LIMIT + 2, "held": 0}
    lines = logged(proxy.nginx, name, HTTP1_LIMIT + 2)
    assert len(lines) == HTTP1_LIMIT + 2
    assert {protocol for protocol, _, _, _ in lines} == {"HTTP/1.1"}
    # One connection each: an open stream holds its connection.
    assert len({connection for _, connection, _, _ in lines}) == HTTP1_LIMIT + 2


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_gunicorn_http2_serves_one_stream_at_a_time(
    page: Page, start_server: t.Callable[..., Server], tls: Tls, worker: str
) -> None:
    """Why the docs do not recommend gunicorn's own HTTP/2 for streams: its
    workers serve the streams of a connection one after another, so the
    second stream starts only once the first has ended (here: given up
    waiting for the second, after one second)."""
    if gunicorn.version_info < (25,):
        pytest.skip(f"gunicorn {gunicorn.__version__} has no HTTP/2 (25 added it)")
    server = start_server(
        worker=worker,
        scheme="https",
        verify=tls.context,
        env={
            "GUNICORN_CMD_ARGS": (
                f"--certfile {tls.cert} --keyfile {tls.key} --http-protocols h2,h1"
            )
        },
    )
    name = f"gunicorn-h2-{worker}-{time.monotonic_ns()}"
    page.goto(server.url + "/page")
    assert page.evaluate(PROTOCOL) == "h2"
    page.evaluate(OPEN_STREAMS, [f"/barrier/{name}?n=2&timeout=1", 2])
    page.wait_for_function("window.got.length >= 2", timeout=30_000)
    # The first stream waited alone and ended; only then did the second
    # start, and it found the first gone: never two at once.
    assert page.evaluate("window.got") == [
        {"i": 0, "timeout": "only 1 of 2 arrived"},
        {"i": 1, "arrival": 2, "arrived": 2},
    ]
