"""(3) sse-starlette: ``EventSourceResponse`` on uvicorn (one process).

``sep="\\n"`` so the wire format matches the other servers (its default is
CRLF); ``ping`` is the same heartbeat interval.

Scenario D (``/bcast``, ``POST /publish``): an ``asyncio.Queue`` per
subscriber; the publish handler encodes the event data once and puts it
into every queue, and each subscriber's generator yields what it gets.
"""

from __future__ import annotations

import asyncio
import json
import time
import typing as t

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from .common import (
    BCAST,
    DEFAULT_PACED_INTERVAL,
    DEFAULT_PACED_N,
    DEFAULT_TOKENS,
    HEARTBEAT,
    float_arg,
    int_arg,
    make_chunk,
)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def idle(request: Request) -> EventSourceResponse:
    async def gen() -> t.AsyncIterator[t.Any]:
        yield {"comment": ""}  # one byte at once, like the other servers
        while True:
            await asyncio.sleep(3600)

    return EventSourceResponse(gen(), ping=HEARTBEAT, sep="\n")


async def tokens(request: Request) -> EventSourceResponse:
    n = int_arg(request.query_params, "n", DEFAULT_TOKENS)

    async def gen() -> t.AsyncIterator[t.Any]:
        for _ in range(n):
            yield {"data": json.dumps(make_chunk())}

    return EventSourceResponse(gen(), ping=HEARTBEAT, sep="\n")


async def paced(request: Request) -> EventSourceResponse:
    n = int_arg(request.query_params, "n", DEFAULT_PACED_N)
    interval = float_arg(request.query_params, "interval", DEFAULT_PACED_INTERVAL)

    async def gen() -> t.AsyncIterator[t.Any]:
        t0 = time.time()
        for i in range(n):
            delay = t0 + (i + 1) * interval - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield {"data": json.dumps({"seq": i, "t": time.time()})}

    return EventSourceResponse(gen(), ping=HEARTBEAT, sep="\n")


#: The queues of the open subscribers of scenario D.
SUBSCRIBERS: set[asyncio.Queue[str]] = set()


async def bcast(request: Request) -> EventSourceResponse:
    async def gen() -> t.AsyncIterator[t.Any]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        SUBSCRIBERS.add(queue)
        try:
            yield {"comment": ""}
            while True:
                yield {"data": await queue.get()}
        finally:
            SUBSCRIBERS.discard(queue)

    return EventSourceResponse(gen(), ping=HEARTBEAT, sep="\n")


async def publish(request: Request) -> JSONResponse:
    seq = int_arg(request.query_params, "seq", 0)
    sent = time.time()
    data = json.dumps({"seq": seq, "t": sent}, separators=(",", ":"))
    for queue in tuple(SUBSCRIBERS):
        queue.put_nowait(data)
    return JSONResponse({"fanout_s": time.time() - sent, "channel": BCAST})


app = Starlette(
    routes=[
        Route("/bcast", bcast),
        Route("/publish", publish, methods=["POST"]),
        Route("/health", health),
        Route("/idle", idle),
        Route("/tokens", tokens),
        Route("/paced", paced),
    ]
)
