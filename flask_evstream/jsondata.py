"""JSON text for event data: a value becomes the compact JSON an event sends.

The standard library's encoder defines the result: ``ensure_ascii=False``,
no spaces, NaN and infinities refused (:func:`stdlib_dumps`). With
:mod:`orjson` installed (the ``fast`` extra), :func:`dumpb` encodes the values
for which orjson's bytes are provably the standard library's text, and
leaves everything else to the standard library, which then gives the same
text or raises the same error as without orjson.

What orjson is trusted with, each with its reason:

* Only exact ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``bool`` and
  ``None``, checked by a walk over the value's types before orjson runs.
  orjson writes types the standard library refuses (``Enum`` members,
  ``UUID``, ``orjson.Fragment``) and writes NaN and infinities as ``null``;
  the walk is cheaper than comparing ``orjson.loads(out)`` with the value,
  and exact where ``==`` is not (``1 == 1.0 == True``; an enum member may
  equal its value).
* Floats only when written without an exponent (``0.0`` and
  ``1e-4 <= abs(x) < 1e16``): there both write the shortest digits that
  round-trip, the same way; outside it orjson writes ``1e-7`` and
  ``0.00001`` where Python writes ``1e-07`` and ``1e-05``, and orjson 3.9
  ``1e16`` for ``1e+16``. NaN and infinities fail the same test.
* Keys, integers and strings are left to orjson's own refusals: it takes
  exact ``str`` keys only (the standard library also writes int, float,
  bool and None keys, and str subclasses), integers within 64 bits and
  strings without lone surrogates, and raises otherwise; its string escapes
  are the standard library's for every code point.

``tests/test_jsondata.py`` checks each of these against the installed
orjson (every code point, 800,000 floats) and compares whole
events on random values. Nesting deeper than :data:`MAX_DEPTH` goes to the standard
library (orjson refuses 255 levels; the walk must not hit Python's own
recursion limit).

An app that sets its own JSON provider (``app.json``) gets it instead:
:func:`current_provider` and :func:`app_provider`.

.. versionadded:: 0.2
"""

from __future__ import annotations

import json
import typing as t

from flask.globals import _cv_app
from flask.json.provider import DefaultJSONProvider

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.json.provider import JSONProvider

__all__ = [
    "FAST",
    "MAX_DEPTH",
    "app_provider",
    "current_provider",
    "dumpb",
    "dumps",
    "stdlib_dumps",
]

#: Containers nested deeper than this are left to the standard library.
MAX_DEPTH = 200

#: The standard library's encoder: the reference for every result.
stdlib_dumps: t.Callable[[t.Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


try:
    import orjson
except ImportError:  # the fast extra is not installed
    _orjson_dumps: t.Callable[..., bytes] | None = None
    _OPTION = 0
else:
    _orjson_dumps = orjson.dumps
    # Defence in depth: a subclass, datetime or dataclass that got past the
    # walk is refused (there is no default=), not written orjson's way.
    _OPTION = (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )

#: Whether orjson is installed and used.
FAST = _orjson_dumps is not None


def _plain(value: t.Any, depth: int) -> bool:
    """Whether ``value`` holds only types that orjson writes exactly as the
    standard library does (see the module docs)."""
    tp = type(value)
    items: t.Iterable[t.Any]
    if tp is dict:
        items = value.values()
    elif tp is list or tp is tuple:
        items = value
    elif tp is float:
        return bool(value == 0.0 or 1e-4 <= abs(value) < 1e16)
    else:
        return tp is str or tp is int or tp is bool or value is None
    if depth >= MAX_DEPTH:
        return False
    for item in items:
        tp = type(item)
        if tp is str or item is None or tp is int or tp is bool:
            continue
        if tp is float:
            if item == 0.0 or 1e-4 <= abs(item) < 1e16:
                continue
            return False
        if (tp is dict or tp is list or tp is tuple) and _plain(item, depth + 1):
            continue
        return False
    return True


def dumpb(value: t.Any) -> bytes | None:
    """Return the standard library's JSON text for ``value`` as UTF-8, made
    by orjson, or ``None`` when orjson is not installed or not trusted with
    this value (then call :func:`stdlib_dumps`).

    The bytes hold no CR or LF (compact JSON escapes them in strings).
    """
    if _orjson_dumps is None or not _plain(value, 0):
        return None
    try:
        return _orjson_dumps(value, option=_OPTION)
    except TypeError:  # orjson.JSONEncodeError: a key, an int or a str it refuses
        return None


def dumps(value: t.Any) -> str:
    """Return the standard library's JSON text for ``value`` (by orjson when
    it can).

    :raises TypeError, ValueError: as :func:`stdlib_dumps` does.
    """
    out = dumpb(value)
    return stdlib_dumps(value) if out is None else out.decode()


def current_provider() -> JSONProvider | None:
    """Return the current app's JSON provider when it is the app's own (see
    :func:`app_provider`); ``None`` outside an app context."""
    # The context variable behind current_app: no proxy on this path.
    ctx = _cv_app.get(None)
    if ctx is None:
        return None
    provider = ctx.app.json
    return None if type(provider) is DefaultJSONProvider else provider


def app_provider(app: Flask) -> JSONProvider | None:
    """Return ``app.json`` when it is not Flask's
    :class:`~flask.json.provider.DefaultJSONProvider` (the app set
    ``json_provider_class`` or ``app.json`` to its own), else ``None``.

    A subclass of ``DefaultJSONProvider`` is the app's own. A
    ``DefaultJSONProvider`` whose attributes were changed (``sort_keys``,
    ``compact``) is not: events keep this module's encoding.
    """
    provider = app.json
    return None if type(provider) is DefaultJSONProvider else provider
