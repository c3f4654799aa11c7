"""Request helpers for stream views."""

from __future__ import annotations

from flask import request

__all__ = ["last_event_id", "parse_event_id", "MAX_ID_DIGITS"]

#: The most digits an id we parse may have: every such id fits an int64 for
#: any client, and a long header never reaches ``int()``'s limits.
MAX_ID_DIGITS = 18


def last_event_id() -> str | None:
    """Return the id of the last event the client received, if it sent one.

    Browsers send it in the ``Last-Event-ID`` header when ``EventSource``
    reconnects; polyfills that cannot set headers send a ``lastEventId``
    query parameter instead. The header wins when both are present.

    This is client input, as it came: use :func:`parse_event_id` to read a
    number from it.

    :return: the id, or ``None`` when the client sent none (or an empty one).
    :raises RuntimeError: called outside a request.

    .. versionadded:: 0.1
    """
    value = request.headers.get("Last-Event-ID")
    if not value:
        value = request.args.get("lastEventId")
    return value or None


def parse_event_id(value: str | None) -> int | None:
    """Read an event id sent by a client as a number, safely.

    An id is a number when it is 1 to 18 ASCII digits (``"0"`` included).
    Anything else (``None``, an empty or foreign id, ``"²"`` or ``"٣"``,
    which :meth:`str.isdigit` accepts, signs, spaces, more digits) is "no
    id": the result is ``None``, never an exception, so a client's header
    can never cause a 500::

        done = parse_event_id(last_event_id()) or 0

    :param value: usually :func:`last_event_id`.
    :return: the number, or ``None``.

    .. versionadded:: 0.2
    """
    if (
        value is None
        or not 0 < len(value) <= MAX_ID_DIGITS
        or not value.isascii()
        or not value.isdigit()
    ):
        return None
    return int(value)
