"""The Flask extension :class:`EvStream` and its configuration."""

from __future__ import annotations

import dataclasses
import typing as t

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = ["EvStream", "Settings", "DEFAULTS", "FROM_CONFIG", "settings_for"]

#: Every config key the extension reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "EVSTREAM_HEARTBEAT": 15.0,
    "EVSTREAM_RETRY": None,
    "EVSTREAM_START_WAIT": 0.25,
    "EVSTREAM_MAX_BUFFER": 64 * 1024,
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
        waits for the client.
    """

    heartbeat: float | None = 15.0
    retry: int | None = None
    start_wait: float = 0.25
    max_buffer: int = 64 * 1024

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        """Read and validate the ``EVSTREAM_*`` keys of a Flask config.

        :raises ValueError: a key has a value that is not allowed; the
            message names the key and shows the value.
        """

        def get(key: str) -> t.Any:
            return config.get(key, DEFAULTS[key])

        max_buffer = get("EVSTREAM_MAX_BUFFER")
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(
                "EVSTREAM_MAX_BUFFER must be a positive integer number of bytes,"
                f" got {max_buffer!r}"
            )
        start_wait = _number("EVSTREAM_START_WAIT", get("EVSTREAM_START_WAIT"), allow_none=False)
        assert start_wait is not None
        return cls(
            heartbeat=check_heartbeat("EVSTREAM_HEARTBEAT", get("EVSTREAM_HEARTBEAT")),
            retry=check_retry("EVSTREAM_RETRY", get("EVSTREAM_RETRY")),
            start_wait=start_wait,
            max_buffer=max_buffer,
        )


@dataclasses.dataclass
class _State:
    extension: EvStream
    settings: Settings


def settings_for(app: Flask) -> Settings:
    """Return the settings of ``app``: validated at ``init_app``, or read from
    its config now when the extension was not registered (``sse_route`` works
    without it)."""
    state = app.extensions.get("evstream")
    if state is not None:
        return state.settings  # type: ignore[no-any-return]
    return Settings.from_config(app.config)


class EvStream:
    """The flask-evstream extension.

    ``sse_route`` works without it; registering it validates the
    configuration once at start-up::

        sse = EvStream(app)
        # or, with an app factory:
        sse = EvStream()
        sse.init_app(app)

    :param app: an app to register on now.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: write the defaults of missing config keys and
        validate them.

        Config keys read (defaults in :data:`DEFAULTS`):

        - ``EVSTREAM_HEARTBEAT``: seconds of silence before a keep-alive
          comment is written; ``None`` or ``0`` disables it. Default 15.
        - ``EVSTREAM_RETRY``: the ``retry`` (ms) every stream opens with,
          unless ``sse_route(retry=...)`` says otherwise. Default ``None``.
        - ``EVSTREAM_START_WAIT``: seconds a stream view waits for its first
          event before sending the headers; an error raised in that time
          (``abort(403)``) becomes the response. Default 0.25.
        - ``EVSTREAM_MAX_BUFFER``: bytes a stream may have pending for a
          slow client before its generator is paused. Default 65536.

        :raises RuntimeError: the extension is already registered on ``app``.
        :raises ValueError: a config value is not allowed.
        """
        if "evstream" in app.extensions:
            raise RuntimeError(
                "flask-evstream is already registered on this app. Create one"
                " EvStream per app, or call init_app(app) once."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        app.extensions["evstream"] = _State(self, Settings.from_config(app.config))
