"""The demo's settings: its own ``DEMO_*`` keys, their defaults, and how they
are read from the environment.

flask-evstream's keys come through Flask's ``app.config.from_prefixed_env()``
(``FLASK_EVSTREAM_HEARTBEAT=5`` sets ``EVSTREAM_HEARTBEAT``); the demo's own
keys are read from variables of the same name (``DEMO_TOKENS_PER_SECOND=40``).
"""

from __future__ import annotations

import os
import typing as t

#: Every demo key, its default, and what it does (the README lists them).
DEFAULTS: dict[str, t.Any] = {
    # The offline model: how fast it types and how long it talks.
    "DEMO_TOKENS_PER_SECOND": 25.0,
    "DEMO_ANSWER_WORDS": 160,
    # Changes the offline model's text (two instances that must differ).
    "DEMO_SEED": 0,
    # The model name answers carry when the request names none.
    "DEMO_MODEL": "evstream-offline",
    # Stream another OpenAI-compatible server's tokens through instead.
    "DEMO_UPSTREAM_BASE_URL": "",
    "DEMO_UPSTREAM_API_KEY": "",
    "DEMO_UPSTREAM_MODEL": "",
    # Background jobs: steps of a job and seconds per step.
    "DEMO_JOB_STEPS": 40,
    "DEMO_JOB_STEP_SECONDS": 0.25,
}


def load(config: t.MutableMapping[str, t.Any], environ: t.Mapping[str, str] = os.environ) -> None:
    """Set every ``DEMO_*`` key in ``config``: from ``environ`` when it is
    there, else the default, unless ``config`` already holds it.

    :raises ValueError: a variable does not parse as its key's type.
    """
    for key, default in DEFAULTS.items():
        raw = environ.get(key)
        if raw is None or raw == "":
            config.setdefault(key, default)
            continue
        config[key] = _parse(key, raw, default)
    check(config)


def _parse(key: str, raw: str, default: t.Any) -> t.Any:
    if isinstance(default, str):
        return raw
    kind = type(default)
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(
            f"{key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def check(config: t.Mapping[str, t.Any]) -> None:
    """Refuse settings the demo cannot run with.

    :raises ValueError: naming the key, what is allowed and what came.
    """
    positive = ("DEMO_TOKENS_PER_SECOND", "DEMO_ANSWER_WORDS", "DEMO_JOB_STEPS")
    for key in positive:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{key} must be a number above 0, got {value!r}")
    step = config["DEMO_JOB_STEP_SECONDS"]
    if isinstance(step, bool) or not isinstance(step, (int, float)) or step < 0:
        raise ValueError(f"DEMO_JOB_STEP_SECONDS must be a number >= 0, got {step!r}")
    if not isinstance(config["DEMO_JOB_STEPS"], int):
        raise ValueError(f"DEMO_JOB_STEPS must be an integer, got {config['DEMO_JOB_STEPS']!r}")
