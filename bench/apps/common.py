"""What the four benchmark apps share: settings, the payload, the schedule.

Every app serves the same routes:

``/health``
    ``200 ok``: the runner polls it until the server is up.
``/idle``
    An endless stream that sends one comment at once (so headers and a first
    byte leave), then nothing but a keep-alive every ``BENCH_HEARTBEAT``
    seconds (scenario A).
``/tokens?n=N``
    ``N`` OpenAI-chunk-sized events produced in a tight loop, then the end
    (scenario B).
``/paced?n=N&interval=S``
    ``N`` events ``S`` seconds apart on an absolute schedule, each carrying
    ``time.time()`` taken just before it is handed to the framework
    (scenario C).

The broadcast servers of scenario D (``bare_fanout``, ``evstream``,
``sse_starlette_app``) also serve:

``/bcast``
    A subscriber: an endless stream that sends one comment at once, then
    every broadcast event (and a keep-alive after ``BENCH_HEARTBEAT`` seconds
    of silence).
``POST /publish?seq=N``
    Takes ``time.time()``, then publishes ``{"seq":N,"t":<that time>}`` to
    every subscriber of this process; answers ``{"fanout_s": ...}``, the
    seconds the publish (or fan-out) call took in the handler.
"""

from __future__ import annotations

import json
import os
import time
import typing as t

#: Seconds between keep-alive comments on an idle stream.
HEARTBEAT = float(os.environ.get("BENCH_HEARTBEAT", "5"))

DEFAULT_TOKENS = 100_000
DEFAULT_PACED_N = 60
DEFAULT_PACED_INTERVAL = 0.05


def make_chunk() -> dict[str, t.Any]:
    """One OpenAI ``chat.completion.chunk``, built afresh as a real view would."""
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}],
    }


#: The chunk's compact JSON text, built once (``evstream-str`` yields it).
CHUNK_JSON = json.dumps(make_chunk(), separators=(",", ":"))

#: The same chunk as one pre-encoded event (what the bare app writes).
CHUNK_WIRE = b"data: " + CHUNK_JSON.encode() + b"\n\n"

#: Scenario D's channel name.
BCAST = "bcast"


def int_arg(args: t.Mapping[str, t.Any], name: str, default: int) -> int:
    value = args.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value not in (None, "") else default


def float_arg(args: t.Mapping[str, t.Any], name: str, default: float) -> float:
    value = args.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return float(value) if value not in (None, "") else default


def pace(t0: float, i: int, interval: float, sleep: t.Callable[[float], t.Any]) -> None:
    """Sleep until event ``i`` is due: ``t0 + (i + 1) * interval``."""
    delay = t0 + (i + 1) * interval - time.time()
    if delay > 0:
        sleep(delay)
