"""Read the events of a stream response in your own tests.

::

    from flask_evstream.testing import read_events

    def test_clock(client):
        response = client.get("/clock")
        events = read_events(response, limit=3)   # closes the stream after 3
        assert events[0].retry == 3000

The parser follows the WHATWG "Interpreting an event stream" rules: line
endings CRLF, LF and CR; one leading space stripped from values; ``id``
holding NUL and ``retry`` that is not all ASCII digits ignored; an event is
dispatched on a blank line when its data is not empty.
"""

from __future__ import annotations

import codecs
import re
import typing as t

from .event import Event

__all__ = ["iter_events", "read_events", "parse"]

_EOL = re.compile(r"\r\n|\r|\n")


def parse(chunks: t.Iterable[bytes]) -> t.Iterator[Event]:
    """Parse ``text/event-stream`` bytes into the events a browser dispatches.

    Each :class:`~flask_evstream.Event` has the dispatched data, its event
    type (``None`` for the default), the id and retry set by the lines of
    that event (``None`` when it set none), and no comment.

    :param chunks: the body, in pieces split anywhere.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    first = True
    data: list[str] = []
    event_type = ""
    event_id: str | None = None
    retry: int | None = None
    for chunk in _with_end(chunks):
        at_end = chunk is None
        buffer += decoder.decode(b"", final=True) if chunk is None else decoder.decode(chunk)
        if first and buffer:
            buffer = buffer[1:] if buffer[0] == "\ufeff" else buffer
            first = False
        lines: list[str] = []
        pos = 0
        for match in _EOL.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer) and not at_end:
                break  # maybe the first half of a CRLF split across chunks
            lines.append(buffer[pos : match.start()])
            pos = match.end()
        buffer = buffer[pos:]
        for line in lines:
            if line == "":
                if data:
                    yield Event(
                        "\n".join(data),
                        event=event_type or None,
                        id=event_id,
                        retry=retry,
                    )
                data, event_type, event_id, retry = [], "", None, None
                continue
            if line.startswith(":"):
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id":
                if "\0" not in value:
                    event_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    retry = int(value)


def _with_end(chunks: t.Iterable[bytes]) -> t.Iterator[bytes | None]:
    yield from chunks
    yield None


def iter_events(response: t.Any) -> t.Iterator[Event]:
    """Yield the events of a test-client response as they arrive.

    :param response: what ``app.test_client().get(...)`` returned.
    :raises ValueError: the response is not ``text/event-stream``.
    """
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("text/event-stream"):
        raise ValueError(
            "Expected response header Content-Type to be text/event-stream,"
            f" got {content_type!r} (status {response.status})"
        )
    yield from parse(response.iter_encoded())


def read_events(response: t.Any, limit: int | None = None) -> list[Event]:
    """Read the events of a test-client response, then close it.

    :param response: what ``app.test_client().get(...)`` returned.
    :param limit: stop after this many events (for endless streams); the
        stream is closed, so its generator's ``finally`` runs.
    """
    events: list[Event] = []
    try:
        if limit is not None and limit <= 0:
            return events
        for event in iter_events(response):
            events.append(event)
            if limit is not None and len(events) >= limit:
                break
    finally:
        response.close()
    return events
