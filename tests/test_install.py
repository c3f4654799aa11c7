"""What a user installs, without the test extras: a clean venv with only
``pip install '.[gevent]'`` (and ``'.[gevent,redis]'``) serves a stream
through the shipped gunicorn config. The test venv has every test extra,
which could hide a dependency the package forgets to declare (gunicorn's
gevent worker needs ``packaging``, which only ``gunicorn[gevent]`` brings).

The venv gets a current pip (``--upgrade-deps``): the pip that Python 3.9's
``ensurepip`` bundles (23.0) backtracks for many minutes over Flask's
dependencies on this index. gevent and greenlet must arrive as published
wheels, not as wheels pip compiled: compiling needs a C toolchain the user
may not have, and takes minutes. gevent 26 has no wheels for Python 3.9,
which ``setup.py`` answers with a marker; on 3.9 this test is what shows
that the marker works.

The install and the server are the two lines of deploy.rst (``sh-deploy``):
its ``pip install`` with this checkout in place of the released package,
then its ``gunicorn`` command as written, from the clean venv's ``bin``,
serving a ``yourapp.py``."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, free_port
from .docs_samples import sample
from .redis_server import RedisServer
from .sockets import RawStream
from .test_docs_server import Command

pytestmark = pytest.mark.server

APP = """
import os
from flask import Flask
from flask_evstream import EvStream, last_event_id, sse_route

app = Flask(__name__)
app.config["EVSTREAM_BROKER_URL"] = os.environ.get("EVSTREAM_BROKER_URL", "memory://")
sse = EvStream(app)

@app.get("/stats")
def stats():
    import flask_evstream
    return {"file": flask_evstream.__file__}

@app.get("/count")
@sse_route(ids=True)
def count():
    yield from ("one", "two")

@app.get("/sub")
@sse_route()
def sub():
    return sse.subscribe("news", last_event_id=last_event_id())

@app.post("/publish")
def publish():
    return {"id": sse.publish("news", "hello")}
"""


def make_venv(where: Path, extras: str) -> str:
    subprocess.run([sys.executable, "-m", "venv", "--upgrade-deps", str(where)], check=True)
    python = str(where / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f".[{extras}]"],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    return python


def wheel_tags(venv: Path, project: str) -> list[str]:
    """The tags of the wheel ``project`` was installed from: ``manylinux``
    ones for a published wheel, a bare ``linux_x86_64`` for one pip built."""
    (wheel,) = venv.glob(f"lib/python*/site-packages/{project}-*.dist-info/WHEEL")
    return [
        line.split(":", 1)[1].strip()
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag:")
    ]


def deploy_sample() -> tuple[str, str]:
    """deploy.rst's install line's extras, and its gunicorn line."""
    pip_line, gunicorn_line = sample("sh-deploy").splitlines()
    words = shlex.split(pip_line)
    assert words[:2] == ["pip", "install"], pip_line
    match = re.fullmatch(r"flask-evstream\[([\w,]+)\]", words[2])
    assert match is not None and len(words) == 3, pip_line
    assert gunicorn_line.startswith("gunicorn ") and gunicorn_line.endswith(" yourapp:app")
    return match[1], gunicorn_line


@pytest.mark.parametrize("more", ["", ",redis"])
def test_a_clean_install_serves_streams(more: str, tmp_path: Path) -> None:
    documented, gunicorn_line = deploy_sample()
    assert documented == "gevent"
    extras = documented + more
    python = make_venv(tmp_path / "venv", extras)
    for project in ("gevent", "greenlet"):
        tags = wheel_tags(tmp_path / "venv", project)
        assert tags and all("manylinux" in tag for tag in tags), (project, tags)
    appdir = tmp_path / "app"
    appdir.mkdir()
    (appdir / "yourapp.py").write_text(APP)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"EVSTREAM_BIND": f"127.0.0.1:{port}", "EVSTREAM_WORKERS": "1"}
    redis_server = None
    if "redis" in extras:
        (tmp_path / "redis").mkdir()
        redis_server = RedisServer(tmp_path / "redis")
        env["EVSTREAM_BROKER_URL"] = redis_server.url
    server = None
    try:
        server = Command(
            gunicorn_line,
            env=env,
            tmp=tmp_path,
            ready=url + "/stats",
            cwd=appdir,
            bin_dir=str(Path(python).parent),
            checkout=False,
        )
        # The package came from the clean venv, not from this checkout, and
        # so did gunicorn.
        assert httpx.get(url + "/stats").json()["file"].startswith(str(tmp_path / "venv"))
        assert "gunicorn" in server.log() and "gevent" in server.log()
        stream = RawStream(url, "/count")
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.read_to_end() == b"id: 1\ndata: one\n\nid: 2\ndata: two\n\n"
        stream.close()
        if redis_server is not None:
            first = httpx.post(url + "/publish", timeout=10).json()["id"]
            sub = RawStream(url, "/sub", headers={"Last-Event-ID": str(int(first) - 1)})
            assert sub.read_until(b"\n\n") == f"id: {first}\ndata: hello\n\n".encode()
            sub.close()
        server.stop()
        assert "Traceback" not in server.log(), server.log()
    finally:
        if server is not None:
            server.stop()
        if redis_server is not None:
            redis_server.stop()
