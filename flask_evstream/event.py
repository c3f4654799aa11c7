"""The ``text/event-stream`` wire format: the :class:`Event` value and its encoder.

This module is the only place that writes field names, line endings or the
blank line that dispatches an event. It follows the WHATWG HTML "Server-sent
events" section, "Parsing an event stream" and "Interpreting an event
stream", so that every conforming client sees exactly what was sent.

Deliberate choices, each with its reason:

* Data is split on every line ending the spec knows (CRLF, LF and a lone CR)
  and each line becomes its own ``data:`` line; a client joins them with LF,
  so CRLF and CR in data arrive as LF, which is what the spec does. Other
  characters that :meth:`str.splitlines` would split on (U+2028, form feed,
  ...) are *not* line endings in the spec and are sent untouched.
* Every field is written as ``name: value``: the parser strips exactly one
  space after the colon, so a value that itself begins with a space or a
  colon survives.
* ``event`` and ``id`` holding CR or LF, and ``id`` holding NUL, are refused
  with :class:`ValueError`: a line break there would start a new field or
  event chosen by whoever controls the value (event injection), and a client
  ignores an id holding NUL.
* Every field is tested with ``is not None``: id ``0``, retry ``0`` and the
  empty string are values.
* A comment-only event (keep-alive) is written without the trailing blank
  line. A blank line dispatches nothing in a browser, but widely used
  decoders (``httpx-sse``, the ``openai`` client) turn a blank line into an
  empty event once any id or retry was seen, and such an empty event breaks
  their JSON handling.
* Data that is not a str is written as the JSON text of
  :mod:`flask_evstream.jsondata`: the standard library's compact encoding
  (by orjson when it is installed and gives the same bytes), or the text of
  the app's own JSON provider when the event is made in an app context whose
  ``app.json`` is not Flask's ``DefaultJSONProvider``. Compact JSON holds no
  line ending, so it is one ``data:`` line.
"""

from __future__ import annotations

import typing as t

from .jsondata import app_provider, current_provider, dumpb, stdlib_dumps

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.json.provider import JSONProvider

__all__ = [
    "Event",
    "encode_data",
    "encode_item",
    "takes_id",
    "type_and_data",
    "retry_line",
    "check_event_type",
    "data_text",
    "HEARTBEAT",
    "OPEN",
]

#: Written when nothing else was written for a heartbeat interval.
HEARTBEAT = b": ping\n"

#: Written first when a stream has no retry field and no event ready yet,
#: so that the response headers leave at once (WSGI sends them with the
#: first non-empty chunk).
OPEN = b":\n"

# The fast JSON path, bound here (tests swap it for the standard library's).
_dumpb = dumpb


def _lines(value: str) -> list[str]:
    """Split on the spec's line endings (CRLF, LF, CR) and nothing else."""
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value.split("\n")


def _stdlib_text(data: t.Any) -> str:
    try:
        return stdlib_dumps(data)
    except (TypeError, ValueError) as e:
        raise TypeError(
            "Event data must be a str or a JSON-serializable value (dict, list,"
            f" finite number, bool, None), got {type(data).__name__}: {e}"
        ) from None


def _provider_text(provider: JSONProvider, data: t.Any) -> str:
    name = type(provider).__qualname__
    try:
        text = provider.dumps(data)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"Event data must be a str or a value the app's JSON provider ({name})"
            f" can serialize, got {type(data).__name__}: {e}"
        ) from None
    if not isinstance(text, str):
        raise TypeError(
            f"The app's JSON provider ({name}) must return a str from dumps(),"
            f" got {type(text).__name__} for event data {type(data).__name__}"
        )
    return text


def _data_text(data: t.Any, app: Flask | None = None) -> str:
    if isinstance(data, str):
        return data
    provider = current_provider() if app is None else app_provider(app)
    if provider is not None:
        return _provider_text(provider, data)
    out = _dumpb(data)
    return _stdlib_text(data) if out is None else out.decode()


def _json_wire(data: t.Any) -> bytes:
    """The data lines and blank line of data that is not a str."""
    provider = current_provider()
    if provider is not None:
        return encode_data(_provider_text(provider, data))
    out = _dumpb(data)
    if out is None:
        return encode_data(_stdlib_text(data))
    return b"data: " + out + b"\n\n"  # valid UTF-8 with no CR or LF (dumpb)


def _utf8(text: str, field: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise ValueError(
            f"Event {field} must be valid Unicode text; it holds a lone surrogate: {text!r}"
        ) from None


def encode_data(text: str) -> bytes:
    """The data lines of an event whose data is ``text``, with the blank line
    that dispatches it: ``Event(text).encode()`` without making the Event."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _utf8("data: " + text.replace("\n", "\ndata: ") + "\n\n", "data")


def _check_field(name: str, value: t.Any, *, nul: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(
            f"Event {name} must be a str{' or int' if name == 'id' else ''},"
            f" got {type(value).__name__}: {value!r}"
        )
    if name != "id" and not isinstance(value, str):
        raise TypeError(f"Event {name} must be a str, got int: {value!r}")
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(
            f"Event {name} must not contain CR or LF (it would start a new"
            f" field or event), got {text!r}"
        )
    if nul and "\0" in text:
        raise ValueError(
            f"Event {name} must not contain NUL (clients ignore such an id), got {text!r}"
        )
    return text


class Event:
    """One server-sent event, an immutable value.

    :param data: the payload. A :class:`str` is sent as is (line endings
        become separate ``data:`` lines); any other value is sent as compact
        JSON (no spaces, ``ensure_ascii=False``, NaN refused; the standard
        library's text, made by orjson when the ``fast`` extra is installed).
        The JSON is made here, when the event is made: in an app context
        whose ``app.json`` is not Flask's ``DefaultJSONProvider`` (the app
        set ``json_provider_class`` or ``app.json`` to its own, a subclass
        included), the text is ``app.json.dumps(data)`` instead. Items an
        ``sse_route`` generator yields follow the same rule (it runs in the
        request's context), and so does data given to ``EvStream.publish``
        (with the provider of the app it publishes to). ``None`` sends no
        data field, so nothing is dispatched; ``""`` dispatches an empty
        message.
    :param event: the event type (``addEventListener`` name); no CR or LF.
    :param id: the event id a client sends back as ``Last-Event-ID``; a
        :class:`str` or :class:`int`, no CR, LF or NUL. ``""`` resets it.
    :param retry: the reconnection delay in milliseconds, an integer >= 0.
    :param comment: a comment line (ignored by clients, keeps proxies awake).
    :raises ValueError: a field would break the stream (see module docs).
    :raises TypeError: a field has a type that is not allowed.

    .. versionadded:: 0.1
    """

    __slots__ = ("data", "event", "id", "retry", "comment", "_wire")

    #: The payload as given (``str``, a JSON-able value, or ``None``).
    data: t.Any
    #: The event type, or ``None`` for the default ``message``.
    event: str | None
    #: The id as text, or ``None``.
    id: str | None
    #: The reconnection delay in milliseconds, or ``None``.
    retry: int | None
    #: A comment, or ``None``.
    comment: str | None
    _wire: bytes

    def __init__(
        self,
        data: t.Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        parts: list[str] = []
        if comment is not None:
            if not isinstance(comment, str):
                raise TypeError(
                    f"Event comment must be a str, got {type(comment).__name__}: {comment!r}"
                )
            parts.extend(": " + line if line else ":" for line in _lines(comment))
        if event is not None:
            event = _check_field("event", event)
            parts.append("event: " + event)
        if id is not None:
            id = _check_field("id", id, nul=True)
            parts.append("id: " + id)
        if retry is not None:
            if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
                is_int = isinstance(retry, int) and not isinstance(retry, bool)
                raise (ValueError if is_int else TypeError)(
                    "Event retry must be an integer number of milliseconds >= 0,"
                    f" got {type(retry).__name__}: {retry!r}"
                )
            parts.append(f"retry: {retry}")
        head = "\n".join(parts) + "\n" if parts else ""
        if data is not None:
            wire = _utf8(head, "comment, event or id") + (
                encode_data(data) if isinstance(data, str) else _json_wire(data)
            )
        elif event is None and id is None and retry is None:
            wire = _utf8(head, "comment")  # comment only (or nothing): no dispatch
        else:
            wire = _utf8(head + "\n", "event or id")
        for name, value in (
            ("data", data),
            ("event", event),
            ("id", id),
            ("retry", retry),
            ("comment", comment),
            ("_wire", wire),
        ):
            object.__setattr__(self, name, value)

    def encode(self) -> bytes:
        """Return the exact bytes of this event on the wire (UTF-8).

        An event with data, event, id or retry ends in the blank line that
        dispatches it; a comment-only event is just its comment lines.
        """
        return self._wire

    def __setattr__(self, name: str, value: t.Any) -> None:
        raise AttributeError(f"Event is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        # Equal fields and equal bytes: 1 == True, but "1" and "true" differ.
        return self._wire == other._wire and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._wire)

    def _key(self) -> tuple[t.Any, ...]:
        return (self.data, self.event, self.id, self.retry, self.comment)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}"
            for name, value in zip(("data", "event", "id", "retry", "comment"), self._key())
            if value is not None
        )
        return f"Event({fields})"


def check_event_type(event: t.Any) -> str:
    """Validate an event type the way :class:`Event` does.

    :raises TypeError: not a str.
    :raises ValueError: it holds CR or LF.
    """
    return _check_field("event", event)


def data_text(data: t.Any, app: Flask | None = None) -> str:
    """Return the text an :class:`Event` sends for ``data``: a str as is,
    anything else as JSON (compact, or by the app's own JSON provider).

    :param app: whose JSON provider applies; default the current app, if any.
    :raises TypeError: ``data`` is not JSON-serializable (or not finite).
    """
    return _data_text(data, app)


def type_and_data(event: Event) -> bytes:
    """Return the bytes of ``event`` without its comment, id and retry: its
    event type and its data lines as they were encoded when it was made.

    :param event: an event with data.
    """
    wire = event._wire
    # Comment, event, id and retry lines come first; none starts with "data: ".
    at = 0 if wire.startswith(b"data: ") else wire.index(b"\ndata: ") + 1
    if event.event is None:
        return wire[at:]
    return b"event: " + event.event.encode() + b"\n" + wire[at:]


def retry_line(retry: int) -> bytes:
    """Return the ``retry`` field a stream opens with, without a blank line.

    The field takes effect when the line is read; with no blank line after
    it, decoders that dispatch on any blank line (``httpx-sse``, ``openai``)
    do not see an empty event, and the retry rides with the first event.
    """
    return b"retry: %d\n" % retry


def takes_id(item: t.Any) -> bool:
    """Return whether ``sse_route(ids=True)`` numbers this item.

    Everything that dispatches an event and has no id of its own does.
    """
    return not isinstance(item, Event) or (item.id is None and item._wire[-2:] == b"\n\n")


def encode_item(item: t.Any, id: int | None = None) -> bytes:
    """Encode one item a stream yielded.

    :param item: an :class:`Event` (sent as is), a :class:`str` (sent as
        data) or any JSON-serializable value (sent as compact JSON data).
    :param id: an id to add (``sse_route(ids=True)``); only pass one when
        :func:`takes_id` says the item takes it.
    :raises TypeError: the item cannot be encoded.
    """
    if isinstance(item, Event):
        if id is None:
            return item._wire
        return b"id: %d\n" % id + item._wire
    if isinstance(item, str):
        wire = encode_data(item)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        raise TypeError(
            "A stream item must be an Event, a str or a JSON-serializable value;"
            f" got {type(item).__name__} (decode it to str first)"
        )
    else:
        wire = _json_wire(item)
    if id is not None:
        return b"id: %d\n" % id + wire
    return wire
