"""The docs cannot drift from the code: the configuration reference lists
every key of ``extension.py`` with its real default and a working
environment form, and every gunicorn variable; every code sample of the
pages is run by a test (this module checks that each one is claimed); the
example apps of ``docs/examples/`` run against Flask's test client; the
JavaScript parses; the benchmark tables are the README's; the samples in
the docstrings that the API reference shows run.

The samples that need a real server or a browser are run by
``tests/test_docs_server.py``; the Redis ACL by ``tests/test_docs_redis.py``;
the ``>>>`` examples by ``sphinx-build -b doctest`` (``tests/run.sh``)."""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_evstream import GAP_EVENT, Event
from flask_evstream import extension as extension_module
from flask_evstream.extension import DEFAULTS, Settings
from flask_evstream.testing import iter_events, read_events

from .docs_samples import DOCS, literalincludes, pages, sample, samples

ROOT = DOCS.parent
EXAMPLES = DOCS / "examples"
NODE = shutil.which("node") or "/usr/bin/node"

#: Every code sample of the pages, and the test that runs it.
COVERED = {
    "sh-install": "test_docs.py::test_the_install_line_names_real_extras",
    "sh-install-fast": "test_docs.py::test_the_install_line_names_real_extras",
    "sh-install-metrics": "test_docs.py::test_the_install_line_names_real_extras",
    "py-metrics-config": "test_docs.py::test_metrics_page_samples",
    "py-metrics-mount": "test_docs.py::test_metrics_page_samples",
    "sh-metrics-gunicorn": "test_docs.py::test_metrics_page_samples",
    "sh-flask-run": "test_docs_server.py::test_quickstart_under_flask_run",
    "console-curl": "test_docs_server.py::test_quickstart_under_flask_run",
    "js-quickstart": "test_docs_server.py::test_quickstart_page_in_chromium",
    "sh-gunicorn": "test_docs_server.py::test_quickstart_under_gunicorn",
    "console-curl-gunicorn": "test_docs_server.py::test_quickstart_under_gunicorn",
    "sh-gthread": "test_docs_server.py::test_cleanup_under_gthread_waits_for_the_call",
    "sh-check-config": "test_docs.py::test_check_config_command",
    "sh-redis-workers": "test_docs_server.py::test_news_on_four_workers_with_redis",
    "sh-redis-env": "test_docs_server.py::test_news_with_the_acl_user",
    "redis-acl": "test_docs_redis.py::test_the_acl_user_runs_everything_on_one_server",
    "sh-own-config": "test_docs.py::test_own_gunicorn_config_file",
    "sh-bench": "test_docs.py::test_benchmark_commands",
    "sh-bench-resumable": "test_docs.py::test_benchmark_commands",
    "security.rst#1": "test_docs_server.py::test_security_page_javascript",
    "security.rst#2": "test_docs_server.py::test_security_page_javascript",
    "sh-deploy": "test_install.py::deploy_sample",
    "yaml-ingress": "test_nginx.py::ingress_annotations",
}


def example(name: str) -> t.Any:
    """Import ``docs/examples/<name>.py`` (as the docs' reader would)."""
    return importlib.import_module(f"docs.examples.{name}")


# -- every sample is run -----------------------------------------------------


def test_every_code_sample_is_claimed_by_a_test() -> None:
    found = {s.key: s for page in pages() for s in samples(page)}
    unclaimed = sorted(set(found) - set(COVERED))
    assert not unclaimed, (
        f"code samples no test runs: {unclaimed}: include them from a tested file"
        " (literalinclude), make them doctests, or add a test and list it in COVERED"
    )
    assert sorted(set(COVERED) - set(found)) == [], "COVERED names samples that are gone"
    for key, where in COVERED.items():
        module, _, name = where.partition("::")
        source = (ROOT / "tests" / module).read_text()
        assert f"def {name}(" in source, (key, where)
        assert repr(key).replace("'", '"') in source or f"'{key}'" in source, (
            f"{where} does not read sample {key!r}"
        )


def test_literalincludes_are_tested_files() -> None:
    used = set()
    for page in pages():
        for path in literalincludes(page):
            target = (DOCS / path).resolve()
            assert target.is_file(), (page, path)
            assert (
                target.is_relative_to(EXAMPLES)
                or target.is_relative_to(ROOT / "tests/apps")
                or target.is_relative_to(DOCS / "_snippets")
            ), f"{page} includes {path}: only docs/examples/, docs/_snippets/, tests/apps/ run"
            if target.is_relative_to(DOCS / "_snippets"):
                # A proxy config: the nginx tests start nginx with this file.
                tests_text = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
                assert target.name in tests_text, f"no test starts {path}"
            used.add(target)
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_docs*.py"))
    for path in sorted(EXAMPLES.glob("*.*")):
        if path.suffix not in (".py", ".html"):
            continue
        assert path.stem in tests or path.name in tests, f"no test runs {path.name}"


# -- the configuration reference ---------------------------------------------


def reference(directive: str) -> dict[str, dict[str, str]]:
    """The ``.. <directive>:: NAME`` entries of config.rst and their fields."""
    text = (DOCS / "config.rst").read_text()
    entries: dict[str, dict[str, str]] = {}
    pattern = rf"^\.\. {re.escape(directive)}:: (\S+)\n(.*?)(?=^\S|\Z)"
    for match in re.finditer(pattern, text, re.M | re.S):
        fields = dict(re.findall(r"^\s+:([A-Z]\w*):\s*(.+)$", match[2], re.M))
        entries[match[1]] = fields
    return entries


def defaults_in_source() -> list[str]:
    """The keys of ``DEFAULTS`` as written in extension.py."""
    tree = ast.parse(Path(extension_module.__file__).read_text())
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "DEFAULTS":
            assert isinstance(node.value, ast.Dict)  # type: ignore[attr-defined]
            return [ast.literal_eval(k) for k in node.value.keys]  # type: ignore[attr-defined]
    raise AssertionError("no DEFAULTS in extension.py")


def literal(text: str) -> t.Any:
    match = re.fullmatch(r"``(.*)``", text.strip())
    assert match, f"expected a ``literal``, got {text!r}"
    return ast.literal_eval(match[1])


def test_the_reference_lists_every_config_key() -> None:
    keys = defaults_in_source()
    assert keys == list(DEFAULTS)
    listed = reference("py:data")
    missing = [k for k in keys if k not in listed]
    assert not missing, f"docs/config.rst does not list {missing}"
    assert sorted(set(listed) - set(keys)) == [], "docs/config.rst lists keys the code lacks"
    for key in keys:
        fields = listed[key]
        assert set(fields) == {"Default", "Allowed", "Environment"}, key
        assert literal(fields["Default"]) == DEFAULTS[key], key
        assert type(literal(fields["Default"])) is type(DEFAULTS[key]), key


def test_init_app_docstring_names_every_key() -> None:
    doc = extension_module.EvStream.init_app.__doc__ or ""
    assert [k for k in DEFAULTS if f"``{k}``" not in doc] == []


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_each_environment_form_reaches_the_key(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = reference("py:data")[key]["Environment"]
    name, _, raw = re.fullmatch(r"``(.*)``", env)[1].partition("=")  # type: ignore[index]
    assert name == f"FLASK_{key}"
    monkeypatch.setenv(name, raw)
    if key == "EVSTREAM_METRICS_PATH":  # a path needs the metrics on (config.rst)
        monkeypatch.setenv("FLASK_EVSTREAM_METRICS", "true")
    app = Flask("env")
    app.config.from_prefixed_env()
    value = app.config[key]
    assert value != DEFAULTS[key], f"{env} does not change {key}"
    settings = Settings.from_config(app.config)  # allowed
    assert value in dataclass_values(settings), (key, value)


def dataclass_values(settings: Settings) -> list[t.Any]:
    return list(vars(settings).values())


def test_env_values_that_look_like_json_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """What config.rst says of from_prefixed_env: JSON first, then a string."""
    monkeypatch.setenv("FLASK_EVSTREAM_CHANNEL_TTL", "null")
    monkeypatch.setenv("FLASK_EVSTREAM_REDIS_PREFIX", '"2024"')
    app = Flask("env")
    app.config.from_prefixed_env()
    assert Settings.from_config(app.config).channel_ttl is None
    assert Settings.from_config(app.config).redis_prefix == "2024"
    monkeypatch.setenv("FLASK_EVSTREAM_REDIS_PREFIX", "2024")
    app.config.from_prefixed_env()
    with pytest.raises(ValueError, match="EVSTREAM_REDIS_PREFIX must be 1 to 100"):
        Settings.from_config(app.config)


def gunicorn_env_names() -> set[str]:
    import flask_evstream.gunicorn_conf as conf

    source = Path(conf.__file__).read_text()
    return set(re.findall(r'(?:_int_env|_bool_env|os\.environ\.get)\(\s*"(\w+)"', source))


def test_the_reference_lists_every_gunicorn_variable() -> None:
    names = gunicorn_env_names()
    assert {"EVSTREAM_BIND", "EVSTREAM_WORKERS", "EVSTREAM_GC_FREEZE"} <= names
    listed = reference("envvar")
    ours = {n for n in names if n.startswith("EVSTREAM_")}
    assert sorted(ours - set(listed)) == [], "docs/config.rst misses gunicorn variables"
    assert sorted(set(listed) - ours) == []
    text = (DOCS / "config.rst").read_text()
    for other in names - ours:  # PORT, WEB_CONCURRENCY: named where they matter
        assert f"``{other}``" in text, other
    for name in ours:
        assert set(listed[name]) == {"Default", "Allowed", "Example"}, name


def print_config(env: dict[str, str], *args: str, cwd: Path = EXAMPLES) -> dict[str, str]:
    """gunicorn's resolved settings for ``args`` (nothing is started)."""
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--print-config", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(re.findall(r"^(\w+)\s+= (.*)$", done.stdout, re.M))


GUNICORN_SETTING = {
    "EVSTREAM_BIND": "bind",
    "EVSTREAM_WORKERS": "workers",
    "EVSTREAM_CONNECTIONS": "worker_connections",
    "EVSTREAM_GRACEFUL_TIMEOUT": "graceful_timeout",
}


@pytest.mark.parametrize("name", sorted(GUNICORN_SETTING) + ["EVSTREAM_GC_FREEZE"])
def test_each_gunicorn_example_sets_what_it_says(name: str) -> None:
    example_text = reference("envvar")[name]["Example"]
    var, _, raw = re.fullmatch(r"``(.*)``", example_text)[1].partition("=")  # type: ignore[index]
    assert var == name
    if name == "EVSTREAM_GC_FREEZE":
        done = subprocess.run(
            [sys.executable, "-c", "import flask_evstream.gunicorn_conf as c; print(c.GC_FREEZE)"],
            env={"PYTHONPATH": str(ROOT), name: raw},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.strip() == "False", done.stderr
        return
    default = print_config({}, "-c", "python:flask_evstream.gunicorn_conf", "quickstart:app")
    changed = print_config(
        {name: raw}, "-c", "python:flask_evstream.gunicorn_conf", "quickstart:app"
    )
    setting = GUNICORN_SETTING[name]
    assert changed[setting] != default[setting]
    expected = [b.strip() for b in raw.split(",")] if name == "EVSTREAM_BIND" else int(raw)
    assert ast.literal_eval(changed[setting]) == expected


def test_own_gunicorn_config_file() -> None:
    words = shlex.split(sample("sh-own-config"))
    assert words[:3] == ["gunicorn", "-c", "gunicorn_conf.py"]
    settings = print_config({}, *words[1:])
    assert ast.literal_eval(settings["bind"]) == ["0.0.0.0:9000"]
    assert settings["workers"] == "2"
    assert settings["worker_class"] == "gevent"  # the rest is flask-evstream's
    assert settings["accesslog"] == "-"
    assert "%(U)s" in settings["access_log_format"]


def test_check_config_command() -> None:
    words = shlex.split(sample("sh-check-config"))
    assert words[0] == "gunicorn"
    done = subprocess.run(
        [sys.executable, "-m", *words],
        cwd=EXAMPLES,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # A config that is wrong is refused the same way.
    bad = subprocess.run(
        [sys.executable, "-m", *words],
        cwd=EXAMPLES,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "EVSTREAM_WORKERS": "none"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "EVSTREAM_WORKERS must be a positive integer" in bad.stderr + bad.stdout


def test_the_install_line_names_real_extras() -> None:
    setup = (ROOT / "setup.py").read_text()
    for key in ("sh-install", "sh-install-fast", "sh-install-metrics"):
        words = shlex.split(sample(key))
        assert words[:2] == ["pip", "install"]
        name, extras = re.fullmatch(r"([\w-]+)\[([\w,]+)\]", words[2]).groups()  # type: ignore[union-attr]
        assert f'name="{name}"' in setup
        for extra in extras.split(","):
            assert f'"{extra}": [' in setup, extra
    # The docs extra holds the theme conf.py uses.
    assert '"pallets-sphinx-themes' in setup
    assert 'html_theme = "flask"' in (DOCS / "conf.py").read_text()


# -- the benchmarks -----------------------------------------------------------


def readme_tables() -> list[list[list[str]]]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Speed and memory") :]
    tables: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|[\s\-:|]+\|", line):
                rows.append([c.strip().replace("`", "``") for c in line.strip("|").split("|")])
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def page_tables() -> list[list[list[str]]]:
    text = (DOCS / "benchmarks.rst").read_text()
    tables = []
    for block in text.split(".. list-table::")[1:]:
        rows = []
        for row in re.findall(r"^   \* - (.*(?:\n     - .*)*)", block, re.M):
            rows.append([c.strip() for c in re.split(r"\n     - ", row)])
        tables.append([[("" if c == "\\" else c) for c in r] for r in rows])
    return tables


def test_the_benchmark_tables_are_the_readmes() -> None:
    assert page_tables() == readme_tables()


def test_benchmark_commands() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench import run
    finally:
        sys.path.remove(str(ROOT))
    listed = subprocess.run(
        [sys.executable, "bench/run.py", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    servers = {line.split()[0] for line in listed.splitlines() if line.strip()}
    commands = sample("sh-bench").splitlines() + sample("sh-bench-resumable").splitlines()
    assert len(commands) == 4
    for command in commands:
        words = shlex.split(command)
        assert words[0] == ".venv/bin/python"
        if words[1:] == ["bench/run.py", "--list"]:
            assert servers  # ran above
        elif words[1] == "bench/run.py":
            args = run.parse_args(words[2:])
            named = args.servers or []
            for server in named.split(",") if isinstance(named, str) else named:
                assert server in servers, server
        else:
            assert words[1] == "bench/resumable.py"
            helptext = subprocess.run(
                [sys.executable, words[1], "--help"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            for option in words[2::2]:
                assert option in helptext, option
    # The footnote's command is the one the page gives.
    assert "--fanout-levels 1000,5000 --reps 5" in commands[2]


# -- the JavaScript parses ------------------------------------------------------


def scripts() -> dict[str, tuple[str, bool]]:
    """Every script of the docs: name -> (source, is a module)."""
    found: dict[str, tuple[str, bool]] = {}
    for path in sorted(EXAMPLES.glob("*.html")):
        for i, (attrs, body) in enumerate(
            re.findall(r"<script([^>]*)>(.*?)</script>", path.read_text(), re.S)
        ):
            if body.strip():
                found[f"{path.name}#{i}"] = (body, 'type="module"' in attrs)
    for page in pages():
        for s in samples(page):
            if s.language in ("javascript", "js"):
                found[s.key] = (s.text, False)
    return found


def test_every_script_of_the_docs_parses(tmp_path: Path) -> None:
    found = scripts()
    assert {"chat.html#0", "notify.html#0", "progress.html#0", "security.rst#2"} <= set(found)
    for name, (source, module) in found.items():
        path = tmp_path / (re.sub(r"\W", "_", name) + (".mjs" if module else ".js"))
        path.write_text(source)
        done = subprocess.run([NODE, "--check", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{name}:\n{done.stderr}"


# -- the example apps, in process -----------------------------------------------


def test_quickstart_in_process() -> None:
    quickstart = example("quickstart")
    events = read_events(quickstart.app.test_client().get("/clock"), limit=2)
    assert events[0].retry == 3000
    assert isinstance(json.loads(events[1].data)["now"], float)


def test_stream_views() -> None:
    streams = example("streams")
    client = streams.app.test_client()
    response = client.post("/chat", json={"prompt": "hi there"})
    assert response.headers["Cache-Control"] == "no-cache, no-store, no-transform"
    assert [e.data for e in read_events(response)] == ["You ", "said: ", "hi ", "there ", "[DONE]"]
    response = client.get("/prices")
    assert response.headers["X-Feed"] == "prices"
    events = read_events(response)
    assert events[0].retry == 5000
    assert [(e.event, e.data) for e in events] == [
        ("price", '{"price":101.5}'),
        ("price", '{"price":101.25}'),
        ("price", '{"price":102}'),
    ]
    assert client.get("/topic").status_code == 204
    assert read_events(client.get("/topic?name=x")) == [Event('{"topic":"x"}')]
    assert client.head("/topic?name=x").data == b""


def test_stream_view_errors(caplog: pytest.LogCaptureFixture) -> None:
    streams = example("streams")
    client = streams.app.test_client()
    assert client.get("/inbox").status_code == 403  # the view's abort
    client.post("/login", json={"user": "banned"})
    assert client.get("/inbox").status_code == 403  # before the first event
    client.post("/login", json={"user": "ada"})
    response = client.get("/inbox")
    assert response.status_code == 200
    assert "session=" in response.headers["Set-Cookie"]  # written in the view
    with caplog.at_level("ERROR"):
        assert read_events(response) == [Event('{"hello":"ada"}')]
    assert "RuntimeError: the feed broke" in caplog.text


def test_bytes_items_are_refused() -> None:
    """What the guide says of bytes: a TypeError, a 500 before the first event."""
    from flask_evstream import sse_route

    app = Flask("bytes")

    @app.get("/b")
    @sse_route
    def b() -> t.Any:
        yield b"raw"

    assert app.test_client().get("/b").status_code == 500


def test_ids_resume_from_last_event_id() -> None:
    ids = example("ids")
    client = ids.app.test_client()
    events = read_events(client.get("/job"))
    assert [(e.id, e.data) for e in events] == [
        ("1", '{"step":"fetch"}'),
        ("2", '{"step":"parse"}'),
        ("3", '{"step":"index"}'),
        ("4", '{"step":"publish"}'),
    ]
    events = read_events(client.get("/job", headers={"Last-Event-ID": "2"}))
    assert [(e.id, e.data) for e in events] == [
        ("3", '{"step":"index"}'),
        ("4", '{"step":"publish"}'),
    ]
    assert [e.id for e in read_events(client.get("/job?lastEventId=3"))] == ["4"]
    assert [e.id for e in read_events(client.get("/job", headers={"Last-Event-ID": "²"}))] == [
        "1",
        "2",
        "3",
        "4",
    ]
    assert client.get("/job", headers={"Last-Event-ID": "4"}).status_code == 204


def test_news_channels_in_process() -> None:
    news = example("news")
    client = news.app.test_client()
    first = client.post("/news", data={"title": "one"}).get_json()["id"]
    client.post("/news", data={"title": "two"})
    response = client.get("/news/stream", headers={"Last-Event-ID": first})
    events = iter_events(response)
    assert next(events) == Event('{"title":"two"}', event="flash", id=str(int(first) + 1))
    threading.Timer(0.05, client.post, ("/news",), {"data": {"title": "live"}}).start()
    assert next(events).data == '{"title":"live"}'
    response.close()
    # Several channels, one id; who may read what.
    assert client.get("/me/stream").status_code == 401
    client.post("/login", data={"user": "ada"})
    response = client.get("/me/stream", headers={"Last-Event-ID": first})
    events = iter_events(response)
    assert next(events).data == '{"title":"two"}'
    threading.Timer(0.05, news.sse.publish, ("user:ada", "for ada")).start()
    assert [next(events).data for _ in range(2)] == ['{"title":"live"}', "for ada"]
    response.close()
    with news.app.test_request_context():
        assert news.may_read("user:bob") is False
    # A generator that adds its own events.
    response = client.get("/news/welcome")
    assert next(iter_events(response)) == Event('{"welcome":"ada"}', event="welcome")
    response.close()
    # From a command.
    result = news.app.test_cli_runner().invoke(args=["announce", "From the CLI"])
    assert result.exit_code == 0 and result.output.startswith("published ")
    response = client.get("/news/stream", headers={"Last-Event-ID": first})
    assert [e.data for e in read_events(response, limit=3)][-1] == '{"title":"From the CLI"}'


def test_notifications_in_process() -> None:
    notify = example("notify")
    client = notify.app.test_client()
    response = client.get("/notifications/stream")
    threading.Timer(0.05, client.post, ("/notify",), {"json": {"title": "Deployed"}}).start()
    [event] = read_events(response, limit=1)
    assert event.event == "notification" and json.loads(event.data)["title"] == "Deployed"
    assert "EventSource" in client.get("/").get_data(as_text=True)


def test_progress_and_its_fragments_in_process() -> None:
    progress = example("progress")
    progress.app.config.update(JOB_STEPS=4, JOB_STEP_SECONDS=0.01)
    client = progress.app.test_client()
    job = client.post("/jobs").get_json()["id"]
    response = client.get(f"/jobs/{job}/events")
    got = []
    for event in iter_events(response):
        got.append((event.event, json.loads(event.data)["percent"]))
        if event.event == "done":
            break
    response.close()
    assert got == [
        ("progress", 25),
        ("progress", 50),
        ("progress", 75),
        ("progress", 100),
        ("done", 100),
    ]
    html = client.post("/jobs/html").get_data(as_text=True)
    job = re.search(r'sse-connect="/jobs/(\w+)/fragments"', html)[1]  # type: ignore[index]
    assert 'hx-ext="sse"' in html and 'sse-swap="progress"' in html and 'sse-close="done"' in html
    response = client.get(f"/jobs/{job}/fragments")
    events = iter_events(response)
    fragments = []
    for event in events:
        fragments.append((event.event, event.data))
        if event.event == "done":
            break
    response.close()
    assert fragments[0] == ("progress", '<progress max="100" value="25"></progress> 25 %')
    assert fragments[-1] == ("done", "Done.")


def test_resumable_chat_in_process() -> None:
    chat = example("resumable_chat")
    client = chat.app.test_client()
    response = client.post("/chat", json={"prompt": "?"})
    location = response.headers["Content-Location"]
    events = read_events(response)
    words = [w + " " for w in chat.ANSWER.split(" ")]
    assert [e.data for e in events] == [*words, "[DONE]"]
    resumed = read_events(client.get(location, headers={"Last-Event-ID": events[-3].id}))
    assert [e.data for e in resumed] == [words[-1], "[DONE]"]
    assert client.get("/").get_data(as_text=True) == (EXAMPLES / "chat.html").read_text()


def test_the_testing_page_project_passes(tmp_path: Path) -> None:
    """docs/examples/testing/ is a project of its own: its tests pass under
    pytest, and its leak check fails a test that leaves a stream open."""
    project = EXAMPLES / "testing"
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)]
    done = subprocess.run(run, cwd=project, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
    # A copy with a test that forgets to close its response: the fixture fails it.
    copy = tmp_path / "project"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "test_leak.py").write_text(
        "from flask_evstream.testing import iter_events\n\n"
        "def test_forgets_to_close(client):\n"
        "    next(iter_events(client.get('/news/stream', headers={'Last-Event-ID': '0'})\n"
        "        if client.post('/news', json={}) else None))\n"
    )
    run[-1] = str(copy / "test_leak.py")
    done = subprocess.run(run, cwd=copy, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "a stream was left open" in done.stdout


def test_gap_event_name_is_the_one_the_pages_listen_for() -> None:
    assert f'"{GAP_EVENT}"' in (EXAMPLES / "notify.html").read_text()


# -- the samples of the docstrings (the API reference shows them) --------------


def docstring_samples() -> dict[str, list[str]]:
    """The ``::`` blocks of every docstring in flask_evstream, by the
    object they document (``module`` or ``module.qualname``)."""
    import inspect

    import flask_evstream

    found: dict[str, list[str]] = {}
    package = Path(flask_evstream.__file__).parent
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        module = importlib.import_module(name)
        objects: list[tuple[str, t.Any]] = [(name, module)]
        for attr, value in vars(module).items():
            if getattr(value, "__module__", None) == name and (
                inspect.isfunction(value) or inspect.isclass(value)
            ):
                objects.append((f"{name}.{attr}", value))
                if inspect.isclass(value):
                    objects += [
                        (f"{name}.{attr}.{m}", v)
                        for m, v in vars(value).items()
                        if inspect.isfunction(v)
                    ]
        for where, obj in objects:
            doc = inspect.getdoc(obj) or ""
            blocks = []
            lines = doc.splitlines()
            for i, line in enumerate(lines):
                if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
                    body = []
                    for following in lines[i + 1 :]:
                        if following.strip() and not following.startswith(" "):
                            break
                        body.append(following)
                    blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
            if blocks:
                found[where] = blocks
    return found


def run_sample(code: str, namespace: dict[str, t.Any]) -> dict[str, t.Any]:
    exec(compile(code, "<docstring sample>", "exec"), namespace)
    return namespace


def test_docstring_samples_run(tmp_path: Path) -> None:
    import time

    from flask_evstream import EvStream, last_event_id, parse_event_id, sse_route

    found = docstring_samples()
    assert sorted(found) == [
        "flask_evstream.channels.Subscription",
        "flask_evstream.decorator.sse_route",
        "flask_evstream.extension.EvStream",
        "flask_evstream.extension.EvStream.authorize",
        "flask_evstream.gunicorn_conf",
        "flask_evstream.helpers.parse_event_id",
        "flask_evstream.metrics.metrics_view",
        "flask_evstream.testing",
    ], "a docstring sample no test runs: add it here"

    from flask_evstream.metrics import metrics_view

    [code] = found["flask_evstream.metrics.metrics_view"]
    app = Flask("doc")
    app.config["EVSTREAM_METRICS"] = True
    EvStream(app)
    run_sample(code, {"app": app, "metrics_view": metrics_view, "admin_only": lambda view: view})
    assert b"evstream_open_streams" in app.test_client().get("/metrics").data

    [code] = found["flask_evstream.helpers.parse_event_id"]
    app = Flask("doc")
    with app.test_request_context(headers={"Last-Event-ID": "41"}):
        assert (
            run_sample(code, {"parse_event_id": parse_event_id, "last_event_id": last_event_id})[
                "done"
            ]
            == 41
        )
    with app.test_request_context(headers={"Last-Event-ID": "x"}):
        assert (
            run_sample(code, {"parse_event_id": parse_event_id, "last_event_id": last_event_id})[
                "done"
            ]
            == 0
        )

    [code] = found["flask_evstream.decorator.sse_route"]
    app = Flask("doc")
    run_sample(code, {"app": app, "sse_route": sse_route, "time": time})
    [event] = read_events(app.test_client().get("/clock"), limit=1)
    assert event.retry == 3000 and "now" in json.loads(event.data)

    [code] = found["flask_evstream.testing"]
    test = run_sample(code, {})["test_clock"]
    test(app.test_client())  # the sse_route sample's clock has retry=3000

    [code] = found["flask_evstream.extension.EvStream"]
    direct, factory = code.split("# or, with an app factory:\n")
    views = factory[factory.index("@app.get") :]
    for setup in (direct, factory[: factory.index("@app.get")]):
        app = Flask("doc")
        names = run_sample(
            setup + views,
            {
                "app": app,
                "EvStream": EvStream,
                "sse_route": sse_route,
                "last_event_id": last_event_id,
            },
        )
        response = app.test_client().get("/news")
        threading.Timer(0.05, names["sse"].publish, ("news", "hi")).start()
        assert read_events(response, limit=1)[0].data == "hi"

    [code] = found["flask_evstream.extension.EvStream.authorize"]
    app = Flask("doc")
    sse = EvStream(app)
    user = type("User", (), {"is_admin": False})()
    may_read = run_sample(code, {"sse": sse, "current_user": user})["may_read"]
    assert sse._authorize is may_read
    assert may_read("news") and not may_read("payroll")

    [code] = found["flask_evstream.channels.Subscription"]
    app = Flask("doc")
    sse = EvStream(app)
    sse.publish("jobs", "first")
    code = code.replace('sse.subscribe("jobs")', 'sse.subscribe("jobs", last_event_id="0")')
    code = code.replace("...", "got.append(event.data); break")
    assert run_sample(code, {"sse": sse, "got": []})["got"] == ["first"]
    assert extension_module.subscribers(app) == 0  # the with block closed it

    command, config = found["flask_evstream.gunicorn_conf"]
    assert shlex.split(command)[:3] == ["gunicorn", "-c", "python:flask_evstream.gunicorn_conf"]
    assert print_config({}, *shlex.split(command)[1:-1], "quickstart:app")["workers"]
    (tmp_path / "conf.py").write_text(config)
    settings = print_config({}, "-c", str(tmp_path / "conf.py"), "quickstart:app")
    assert ast.literal_eval(settings["bind"]) == ["0.0.0.0:9000"]
    assert settings["worker_class"] == "gevent"


def test_metrics_page_samples(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from flask_evstream import EvStream
    from flask_evstream.metrics import metrics_view

    def families(data: bytes) -> set[str]:
        return {f.name for f in text_string_to_metric_families(data.decode())}

    app = Flask("metrics-doc")
    run_sample(sample("py-metrics-config"), {"app": app, "EvStream": EvStream})
    assert "evstream_open_streams" in families(app.test_client().get("/metrics").data)

    app = Flask("metrics-doc-mount")
    app.config["EVSTREAM_METRICS"] = True
    EvStream(app)
    allowed: list[bool] = []

    def internal_only(view: t.Any) -> t.Any:
        def guarded() -> t.Any:
            allowed.append(True)
            return view()

        return guarded

    run_sample(
        sample("py-metrics-mount"),
        {"app": app, "internal_only": internal_only, "metrics_view": metrics_view},
    )
    assert "evstream_events_sent" in families(app.test_client().get("/metrics").data)
    assert allowed == [True]

    # The gunicorn command: its environment and config are accepted.
    words = shlex.split(sample("sh-metrics-gunicorn").replace("\\\n", " "))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert sorted(env) == [
        "FLASK_EVSTREAM_BROKER_URL",
        "FLASK_EVSTREAM_METRICS",
        "FLASK_EVSTREAM_METRICS_PATH",
        "PATH",
        "PROMETHEUS_MULTIPROC_DIR",
        "PYTHONPATH",
    ]
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    assert words[0] == "gunicorn"
    assert words[-1] == "metrics_app:app"  # docs/examples/metrics_app.py
    done = subprocess.run(
        [sys.executable, "-m", *words[:-1], "--check-config", words[-1]],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
