"""Through Caddy and Apache (Debian's, as tests/run.sh installs them) with
the configuration docs/deploy.rst shows, included from docs/_snippets/: each
event passes the proxy before the generator makes the next one (lockstep),
heartbeats pass, and Last-Event-ID reaches the app. Apache passes events
without ``flushpackets=on`` too, as the docs say."""

from __future__ import annotations

import shutil
import subprocess
import time
import typing as t
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, Server, free_port
from .processes import end
from .sockets import RawStream
from .test_nginx import lockstep_through

pytestmark = pytest.mark.server

SNIPPETS = ROOT / "docs" / "_snippets"
DOCUMENTED = "127.0.0.1:8000"


def snippet(name: str, upstream: str) -> str:
    text = (SNIPPETS / name).read_text()
    assert DOCUMENTED in text
    return text.replace(DOCUMENTED, upstream)


class Proxy:
    def __init__(self, cmd: list[str], url: str, log: Path) -> None:
        self.url = url
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/stats", timeout=2)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{cmd[0]} did not start:\n{log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        end(self.proc, 10)
        self._out.close()


def caddy(server: Server, tmp: Path) -> Proxy:
    port = free_port()
    upstream = server.url.removeprefix("http://")
    conf = tmp / "Caddyfile"
    body = snippet("Caddyfile", upstream)
    conf.write_text(
        f"{{\n    admin off\n    auto_https off\n}}\nhttp://127.0.0.1:{port} {{\n{body}}}\n"
    )
    binary = shutil.which("caddy") or "/usr/bin/caddy"
    return Proxy(
        [binary, "run", "--config", str(conf), "--adapter", "caddyfile"],
        f"http://127.0.0.1:{port}",
        tmp / "caddy.log",
    )


APACHE = """
ServerRoot /usr/lib/apache2
PidFile {tmp}/apache.pid
Mutex file:{tmp} default
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
User www-data
Group www-data
ErrorLog {tmp}/error.log
LogLevel warn
LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule proxy_module modules/mod_proxy.so
LoadModule proxy_http_module modules/mod_proxy_http.so
{proxy}
"""


def apache(server: Server, tmp: Path, *, flush: bool = True) -> Proxy:
    port = free_port()
    proxy = snippet("apache.conf", server.url.removeprefix("http://"))
    if not flush:
        assert " flushpackets=on" in proxy
        proxy = proxy.replace(" flushpackets=on", "")
    conf = tmp / "apache.conf"
    conf.write_text(APACHE.format(tmp=tmp, port=port, proxy=proxy))
    binary = shutil.which("apache2") or "/usr/sbin/apache2"
    return Proxy(
        [binary, "-f", str(conf), "-DFOREGROUND"], f"http://127.0.0.1:{port}", tmp / "apache.log"
    )


@pytest.fixture
def proxies(gevent_server: Server, tmp_path: Path) -> t.Iterator[t.Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(kind: str, **kwargs: t.Any) -> Proxy:
        where = tmp_path / f"{kind}{len(started)}"
        where.mkdir()
        proxy = {"caddy": caddy, "apache": apache}[kind](gevent_server, where, **kwargs)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.mark.parametrize("kind", ["caddy", "apache"])
def test_events_pass_the_documented_proxy_unbuffered(
    proxies: t.Callable[..., Proxy], gevent_server: Server, kind: str
) -> None:
    proxy = proxies(kind)
    assert lockstep_through(proxy.url, gevent_server, timeout=5) == 3
    quiet = RawStream(proxy.url, "/quiet", timeout=10)
    assert quiet.status == 200
    assert quiet.read_until(b": ping\n").endswith(b": ping\n")
    quiet.close()
    response = httpx.get(proxy.url + "/resume", headers={"Last-Event-ID": "7"}, timeout=10)
    assert b'data: {"step":8}' in response.content


def test_apache_streams_even_without_flushpackets(
    proxies: t.Callable[..., Proxy], gevent_server: Server
) -> None:
    # What docs/deploy.rst says of Apache 2.4 as measured here: mod_proxy_http
    # flushes when the backend has nothing more for now, so events pass
    # without flushpackets=on too (the docs keep the flag for filters that
    # buffer and older versions).
    proxy = proxies("apache", flush=False)
    assert lockstep_through(proxy.url, gevent_server, timeout=3) == 3
