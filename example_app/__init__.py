"""The flask-evstream demo: an OpenAI-compatible chat that types, stops and
survives a reload; live notifications; background jobs with progress.

Serve it with gunicorn and gevent workers::

    gunicorn -c python:flask_evstream.gunicorn_conf 'example_app:create_app()'

Settings come from the environment: flask-evstream's through
``app.config.from_prefixed_env()`` (``FLASK_EVSTREAM_BROKER_URL=redis://...``),
the demo's own ``DEMO_*`` keys by name (see :mod:`example_app.config`).
With no settings it runs offline: the built-in model, the in-memory broker.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask

from flask_evstream import live_streams, producers, subscribers

from . import config
from .extensions import sse
from .models import Model, OfflineModel, UpstreamModel

__all__ = ["create_app", "sse"]


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Make the demo app.

    :param test_config: settings that win over the environment's.
    :raises ValueError: a setting the demo or flask-evstream cannot use.
    """
    app = Flask(__name__)
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)
    config.load(app.config)
    sse.init_app(app)
    app.extensions["demo"] = {"model": make_model(app)}

    from . import chat, jobs, notifications

    app.register_blueprint(chat.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(jobs.bp)
    app.add_url_rule("/healthz", "healthz", healthz)
    return app


def healthz() -> dict[str, t.Any]:
    """This worker's counts: open streams, channel subscriptions, detached
    producers (resumable answers being generated)."""
    return {
        "ok": True,
        "pid": os.getpid(),
        "streams": live_streams(),
        "subscribers": subscribers(),
        "producers": producers(),
    }


def make_model(app: Flask) -> Model:
    """The token source the settings name: an upstream or the offline model."""
    base_url = app.config["DEMO_UPSTREAM_BASE_URL"]
    if base_url:
        return UpstreamModel(
            base_url=base_url,
            api_key=app.config["DEMO_UPSTREAM_API_KEY"],
            model=app.config["DEMO_UPSTREAM_MODEL"],
        )
    return OfflineModel(
        tokens_per_second=float(app.config["DEMO_TOKENS_PER_SECOND"]),
        words=int(app.config["DEMO_ANSWER_WORDS"]),
        seed=int(app.config["DEMO_SEED"]),
    )
