"""The demo's extension instances (bound to an app by ``create_app``)."""

from __future__ import annotations

from flask_evstream import EvStream

#: Streams, channels and resumable answers.
sse = EvStream()
