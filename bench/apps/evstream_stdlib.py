"""(2b) evstream without orjson: the ``evstream`` app with ``import orjson``
failing, as in an install without the ``fast`` extra, so that event data is
encoded by the standard library (``evstream-stdlib`` row, scenario B).

Same process, same views: only the JSON encoder differs from ``evstream``.
"""

from __future__ import annotations

import sys

sys.modules["orjson"] = None  # import orjson now raises ImportError

from flask_evstream import jsondata  # noqa: E402

from .evstream import app  # noqa: E402

assert not jsondata.FAST, "orjson was imported before this module"

__all__ = ["app"]
