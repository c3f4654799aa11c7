"""Our encoder's bytes, read back by independent SSE parsers from PyPI.

Which parsers are oracles, and why
----------------------------------
Each parser below was probed (``test_parser_probe``) against the WHATWG
"Parsing / Interpreting an event stream" rules that matter for what we send:
lines end at CRLF, LF or a lone CR (also when a CRLF or a multi-byte UTF-8
character is split across chunks); U+2028, U+0085, FF, VT, ... are *not*
line ends (``str.splitlines`` splits on them: a parser using it would be
non-conformant); exactly one space after the colon is stripped; trailing
empty ``data:`` lines and whitespace-only data are kept.

* ``httpx-sse`` (``EventSource(response).iter_sse()``, the public API over an
  ``httpx.Response``): conformant on all of the above. Deviations, none of
  which our encoder can trigger in the round trips: a leading BOM is not
  stripped, and a blank line after only ``event``/``id``/``retry`` fields
  dispatches an empty event (the spec dispatches nothing without data).
* ``openai`` (``openai._streaming.SSEDecoder.iter_bytes``, private but what
  ``openai.Stream`` uses): conformant, its own byte-level line splitter; its
  field handling is derived from httpx-sse's, so it has the same two
  deviations. Counted as a third, partly independent oracle.
* ``sseclient-py`` (``SSEClient(chunks).events()``): independent code base,
  conformant on all of the above. Deviations: a blank line in a different
  line-ending style from the line before (``\\n\\r\\n``) does not end the event
  (we only ever write LF); an unterminated last event is dispatched at the
  end of the body (we always end an event with a blank line); ``Event.id``
  is the id field of that event rather than the persistent ``lastEventId``;
  an id holding NUL is not ignored; BOM.
* ``requests-sse`` (``EventSource`` over a ``requests.Session``): NOT
  conformant -- it strips every leading space of a value (``lstrip``), drops
  every trailing newline of the data, an empty ``event:`` gives type ``""``
  and requests' ``iter_lines`` sees an extra blank line when a CRLF is split
  across chunks. Used only in ``test_requests_sse_round_trip_restricted``, on
  the inputs it handles.
* ``flask_evstream.testing.parse`` (ours): conformant. Its ``Event.id`` is
  the id field of that event, like sseclient-py's.
"""

from __future__ import annotations

import dataclasses
import json
import typing as t

import httpx
import httpx_sse
import pytest
import requests
import requests_sse
import sseclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from flask_evstream.event import HEARTBEAT, OPEN, Event, encode_item, retry_line, takes_id
from flask_evstream.testing import parse

# --------------------------------------------------------------------------
# The parsers, each fed a list of byte chunks
# --------------------------------------------------------------------------


class Parsed(t.NamedTuple):
    type: str  # "message" when the stream set none
    data: str
    id: str | None  # see Parser.ids
    retry: int | None


@dataclasses.dataclass(frozen=True)
class Parser:
    name: str
    parse: t.Callable[[t.Sequence[bytes]], list[Parsed]]
    #: "last": the spec's lastEventId ("" until an id field sets it, kept
    #: across events); "own": the id field of that event, None when it has none.
    ids: str
    #: reports the retry field of the event that carried it
    retry: bool
    #: a blank line after fields but no data dispatches nothing (spec)
    no_dispatch_without_data: bool

    def __repr__(self) -> str:
        return self.name


def _httpx_sse(chunks: t.Sequence[bytes]) -> list[Parsed]:
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(list(chunks))
    )
    return [
        Parsed(e.event, e.data, e.id, e.retry) for e in httpx_sse.EventSource(response).iter_sse()
    ]


def _openai(chunks: t.Sequence[bytes]) -> list[Parsed]:
    return [
        Parsed(e.event or "message", e.data, e.id or "", e.retry)
        for e in OpenAISSEDecoder().iter_bytes(iter(list(chunks)))
    ]


def _sseclient(chunks: t.Sequence[bytes]) -> list[Parsed]:
    return [
        Parsed(e.event, e.data, e.id, None if e.retry is None else int(e.retry))
        for e in sseclient.SSEClient(list(chunks)).events()
    ]


def _ours(chunks: t.Sequence[bytes]) -> list[Parsed]:
    return [Parsed(e.event or "message", e.data, e.id, e.retry) for e in parse(chunks)]


class _EndOfBody(Exception):
    """Raised after the last chunk: requests-sse would otherwise reconnect."""


class _Body:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def stream(self, amt: int, decode_content: bool = True) -> t.Iterator[bytes]:
        yield from self._chunks
        raise _EndOfBody

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class _Adapter(requests.adapters.BaseAdapter):
    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self._chunks = chunks

    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "text/event-stream"
        response.raw = _Body(self._chunks)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def _requests_sse(chunks: t.Sequence[bytes]) -> list[Parsed]:
    session = requests.Session()
    session.mount("http://sse.test/", _Adapter(list(chunks)))
    out: list[Parsed] = []
    try:
        with requests_sse.EventSource(
            "http://sse.test/", session=session, max_connect_retry=0
        ) as source:
            for e in source:
                out.append(Parsed(e.type or "", e.data or "", e.last_event_id, None))
    except _EndOfBody:
        pass
    finally:
        session.close()
    return out


HTTPX_SSE = Parser("httpx-sse", _httpx_sse, "last", True, False)
OPENAI = Parser("openai", _openai, "last", True, False)
SSECLIENT = Parser("sseclient-py", _sseclient, "own", True, True)
OURS = Parser("ours", _ours, "own", True, True)
REQUESTS_SSE = Parser("requests-sse", _requests_sse, "last", False, True)

#: the spec-conformant parsers (for what our encoder writes), and ours
ORACLES = [HTTPX_SSE, OPENAI, SSECLIENT, OURS]
ORACLE_IDS = [p.name for p in ORACLES]
ALL_PARSERS = [*ORACLES, REQUESTS_SSE]

# --------------------------------------------------------------------------
# Probes: the evidence for which parser follows the spec
# --------------------------------------------------------------------------

M = "message"

#: name -> (chunks, [(type, data), ...] the spec dispatches)
PROBES: dict[str, tuple[list[bytes], list[tuple[str, str]]]] = {
    "lf": ([b"data: a\ndata: b\n\n"], [(M, "a\nb")]),
    "crlf": ([b"data: a\r\ndata: b\r\n\r\n"], [(M, "a\nb")]),
    "lone_cr": ([b"data: a\rdata: b\r\rdata: c\n\n"], [(M, "a\nb"), (M, "c")]),
    "stream_ends_in_lone_cr": ([b"data: a\r\r"], [(M, "a")]),
    "crlf_split_across_chunks": ([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], [(M, "a\nb")]),
    "lone_cr_at_chunk_end": (
        [b"data: a\r", b"data: b\r", b"\r", b"data: c\n\n"],
        [(M, "a\nb"), (M, "c")],
    ),
    "mixed_line_endings": (
        [b"data: a\n\r\ndata: b\r\rdata: c\r\n\n"],
        [(M, "a"), (M, "b"), (M, "c")],
    ),
    "one_space_stripped": ([b"data:  x\n\ndata:x\n\n"], [(M, " x"), (M, "x")]),
    "colon_in_value": ([b"data: :x\n\ndata: a:b\n\n"], [(M, ":x"), (M, "a:b")]),
    "splitlines_chars_are_not_line_ends": (
        ["data: a\u2028b\u2029c\x85d\x0ce\x0bf\x1cg\x1dh\x1ei\n\n".encode()],
        [(M, "a\u2028b\u2029c\x85d\x0ce\x0bf\x1cg\x1dh\x1ei")],
    ),
    "trailing_empty_data_lines_kept": ([b"data: a\ndata: \ndata:\n\n"], [(M, "a\n\n")]),
    "empty_data": ([b"data: \n\ndata\n\n"], [(M, ""), (M, "")]),
    "whitespace_only_data": ([b"data:    \n\n"], [(M, "   ")]),
    "nul_in_data": ([b"data: a\x00b\n\n"], [(M, "a\x00b")]),
    "utf8_split_byte_by_byte": (
        [bytes([b]) for b in "data: \xe9\U0001f600\u20ac\n\n".encode()],
        [(M, "\xe9\U0001f600\u20ac")],
    ),
    "event_types": (
        [b"event: add\ndata: 1\n\nevent: \ndata: 2\n\ndata: 3\n\n"],
        [("add", "1"), (M, "2"), (M, "3")],
    ),
    "event_type_leading_space": ([b"event:  sp\ndata: x\n\n"], [(" sp", "x")]),
    "comments_and_unknown_fields": ([b": c\n:\nfoo: bar\ndata: x\n\n"], [(M, "x")]),
    "no_dispatch_without_data": (
        [b"event: e\n\nid: 1\n\nretry: 5\n\n:\n\ndata: x\n\n"],
        [(M, "x")],
    ),
    "leading_bom_stripped": (["\ufeffdata: a\n\n".encode()], [(M, "a")]),
    "unterminated_event_discarded": ([b"data: a\n\ndata: b\n"], [(M, "a")]),
}

_DEVIATIONS: dict[str, dict[str, str]] = {
    "httpx-sse": {
        "leading_bom_stripped": "httpx-sse keeps a leading BOM",
        "no_dispatch_without_data": "httpx-sse dispatches an empty event without data",
    },
    "openai": {
        "leading_bom_stripped": "openai keeps a leading BOM",
        "no_dispatch_without_data": "openai dispatches an empty event without data",
    },
    "sseclient-py": {
        "leading_bom_stripped": "sseclient-py keeps a leading BOM",
        "mixed_line_endings": "sseclient-py needs a blank line in the same line-ending style",
        "unterminated_event_discarded": "sseclient-py dispatches an unterminated last event",
    },
    "requests-sse": {
        "leading_bom_stripped": "requests-sse keeps a leading BOM",
        "crlf_split_across_chunks": "requests' iter_lines sees an extra blank line",
        "one_space_stripped": "requests-sse strips every leading space",
        "trailing_empty_data_lines_kept": "requests-sse strips every trailing newline",
        "whitespace_only_data": "requests-sse strips every leading space",
        "event_types": "requests-sse gives type '' for an empty event field",
        "event_type_leading_space": "requests-sse strips every leading space",
    },
}


def _probe_params() -> list[t.Any]:
    params = []
    for parser in ALL_PARSERS:
        for name in PROBES:
            marks: list[pytest.MarkDecorator] = []
            reason = _DEVIATIONS.get(parser.name, {}).get(name)
            if reason is not None:
                # a third-party deviation: not strict, an upgrade may fix it
                marks.append(pytest.mark.xfail(reason=reason, strict=False))
            params.append(pytest.param(parser, name, marks=marks, id=f"{parser.name}-{name}"))
    return params


@pytest.mark.parametrize(("parser", "probe"), _probe_params())
def test_parser_probe(parser: Parser, probe: str) -> None:
    chunks, expected = PROBES[probe]
    assert [(e.type, e.data) for e in parser.parse(chunks)] == expected


@pytest.mark.parametrize("parser", [HTTPX_SSE, OPENAI, REQUESTS_SSE], ids=repr)
def test_probe_last_event_id(parser: Parser) -> None:
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\ndata: d\n\n"
    assert [e.id for e in parser.parse([stream])] == ["1", "1", "", ""]


@pytest.mark.parametrize(
    "parser",
    [
        HTTPX_SSE,
        OPENAI,
        OURS,
        pytest.param(SSECLIENT, marks=pytest.mark.xfail(reason="keeps an id holding NUL")),
        pytest.param(REQUESTS_SSE, marks=pytest.mark.xfail(reason="keeps an id holding NUL")),
    ],
    ids=repr,
)
def test_probe_id_holding_nul_is_ignored(parser: Parser) -> None:
    stream = b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n"
    expected = ["1", "1"] if parser.ids == "last" else ["1", None]
    assert [e.id for e in parser.parse([stream])] == expected


@pytest.mark.parametrize("parser", [SSECLIENT, OURS], ids=repr)
def test_probe_own_event_id(parser: Parser) -> None:
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
    assert [e.id for e in parser.parse([stream])] == ["1", None, ""]


@pytest.mark.parametrize("parser", [HTTPX_SSE, OPENAI, SSECLIENT, OURS], ids=repr)
def test_probe_retry(parser: Parser) -> None:
    stream = b"retry: 1500\ndata: a\n\ndata: b\n\n"
    assert [e.retry for e in parser.parse([stream])] == [1500, None]


# --------------------------------------------------------------------------
# The WHATWG spec's examples ("Interpreting an event stream" and the
# introduction), the spec's own bytes in LF, CRLF and CR line endings
# --------------------------------------------------------------------------


class SpecEvent(t.NamedTuple):
    type: str
    data: str
    last_id: str  # the spec's lastEventId
    own_id: str | None  # the id field of that block


SPEC_EXAMPLES: dict[str, tuple[bytes, list[SpecEvent]]] = {
    "intro_messages": (
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\n"
        b"data: has two lines.\n\n"
        b"data: This is the third message.\n\n",
        [
            SpecEvent(M, "This is the first message.", "", None),
            SpecEvent(M, "This is the second message, it\nhas two lines.", "", None),
            SpecEvent(M, "This is the third message.", "", None),
        ],
    ),
    "intro_event_types": (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        [
            SpecEvent("add", "73857293", "", None),
            SpecEvent("remove", "2153", "", None),
            SpecEvent("add", "113411", "", None),
        ],
    ),
    "yhoo": (b"data: YHOO\ndata: +2\ndata: 10\n\n", [SpecEvent(M, "YHOO\n+2\n10", "", None)]),
    "four_blocks": (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n",
        [
            SpecEvent(M, "first event", "1", "1"),
            SpecEvent(M, "second event", "", ""),
            SpecEvent(M, " third event", "", None),
        ],
    ),
    "two_events": (
        b"data\n\ndata\ndata\n\ndata:",
        [SpecEvent(M, "", "", None), SpecEvent(M, "\n", "", None)],
    ),
    "two_identical_events": (
        b"data:test\n\ndata: test\n\n",
        [SpecEvent(M, "test", "", None), SpecEvent(M, "test", "", None)],
    ),
}

LINE_ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}

#: third-party deviations on the spec's own examples (see PROBES)
SPEC_DEVIATIONS = {
    ("sseclient-py", "two_events"): "sseclient-py dispatches the unterminated last block",
}


def _spec_marks(parser: Parser, example: str, wire: bytes) -> list[pytest.MarkDecorator]:
    marks = []
    reason = SPEC_DEVIATIONS.get((parser.name, example))
    if reason is not None:
        marks.append(pytest.mark.xfail(reason=reason, strict=False))
    return marks


def _with_endings(stream: bytes, eol: bytes) -> bytes:
    return stream.replace(b"\n", eol)


def _expected(parser: Parser, events: t.Iterable[SpecEvent]) -> list[tuple[str, str, str | None]]:
    return [(e.type, e.data, e.last_id if parser.ids == "last" else e.own_id) for e in events]


def _spec_params() -> list[t.Any]:
    params = []
    for parser in ORACLES:
        for example, (stream, _) in SPEC_EXAMPLES.items():
            for ending, eol in LINE_ENDINGS.items():
                marks = _spec_marks(parser, example, _with_endings(stream, eol))
                params.append(
                    pytest.param(
                        parser, example, eol, marks=marks, id=f"{parser.name}-{example}-{ending}"
                    )
                )
    return params


@pytest.mark.parametrize(("parser", "example", "eol"), _spec_params())
def test_spec_example(parser: Parser, example: str, eol: bytes) -> None:
    stream, events = SPEC_EXAMPLES[example]
    got = parser.parse([_with_endings(stream, eol)])
    assert [(e.type, e.data, e.id) for e in got] == _expected(parser, events)


@pytest.mark.parametrize(
    ("parser", "example"),
    [
        pytest.param(p, x, marks=_spec_marks(p, x, b""), id=f"{p.name}-{x}")
        for p in ORACLES
        for x in SPEC_EXAMPLES
    ],
)
def test_spec_example_byte_by_byte(parser: Parser, example: str) -> None:
    stream, events = SPEC_EXAMPLES[example]
    got = parser.parse([bytes([b]) for b in _with_endings(stream, b"\r\n")])
    assert [(e.type, e.data, e.id) for e in got] == _expected(parser, events)


def _spec_as_events(example: str) -> list[Event]:
    """The events of a spec example, as a server using our encoder sends them."""
    out = []
    for e in SPEC_EXAMPLES[example][1]:
        out.append(Event(e.data, event=None if e.type == M else e.type, id=e.own_id))
    return out


@pytest.mark.parametrize("parser", ORACLES, ids=ORACLE_IDS)
@pytest.mark.parametrize("example", list(SPEC_EXAMPLES))
def test_spec_example_as_encoded_by_us(parser: Parser, example: str) -> None:
    wire = b"".join(e.encode() for e in _spec_as_events(example))
    got = parser.parse([wire])
    assert [(e.type, e.data, e.id) for e in got] == _expected(parser, SPEC_EXAMPLES[example][1])


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: characters and snippets that break naive encoders or parsers
TRICKY = [
    " ",
    "  ",
    ":",
    ": ",
    "\t",
    "\u2028",
    "\u2029",
    "\x85",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x00",
    "\ufeff",
    "\xe9",
    "\u20ac",
    "\U0001f600",
    "\U0010ffff",
    "data: x",
    "event: e",
    "id: 1",
    "retry: 1",
]
LINE_BREAKS = ["\r", "\n", "\r\n"]


def texts(*, exclude: str = "", max_size: int = 12) -> st.SearchStrategy[str]:
    """Text of snippets: tricky ones, line breaks, and any Unicode scalar."""
    pieces = [s for s in TRICKY + LINE_BREAKS if not any(c in exclude for c in s)]
    return st.lists(
        st.one_of(
            st.sampled_from(pieces),
            st.characters(codec="utf-8", exclude_characters=exclude),
        ),
        max_size=max_size,
    ).map("".join)


data_texts = texts()
event_texts = texts(exclude="\r\n", max_size=6)
id_texts = texts(exclude="\r\n\x00", max_size=6)
ids = st.one_of(st.none(), id_texts, st.integers(min_value=-(10**12), max_value=10**12))
retries = st.one_of(st.none(), st.integers(min_value=0, max_value=2**40))
comments = st.one_of(st.none(), texts(max_size=6))

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(max_size=6),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts(max_size=4), children, max_size=4),
    ),
    max_leaves=8,
).filter(lambda v: v is not None and not isinstance(v, str))  # a str is sent as is


@st.composite
def events_with_data(draw: st.DrawFn, data: st.SearchStrategy[t.Any] | None = None) -> Event:
    return Event(
        draw(data if data is not None else st.one_of(data_texts, json_values)),
        event=draw(st.none() | event_texts),
        id=draw(ids),
        retry=draw(retries),
        comment=draw(comments),
    )


@st.composite
def events_without_data(draw: st.DrawFn) -> Event:
    """A block with fields but no data: a browser dispatches nothing."""
    event = draw(st.none() | event_texts)
    id = draw(ids)
    retry = draw(retries)
    if event is None and id is None and retry is None:
        retry = 0
    return Event(event=event, id=id, retry=retry, comment=draw(comments))


keep_alives = st.one_of(
    st.sampled_from([HEARTBEAT, OPEN]),
    comments.filter(lambda c: c is not None).map(lambda c: Event(comment=c)),
)


def split(data: st.DataObject, wire: bytes) -> list[bytes]:
    """The wire in chunks cut at drawn byte positions (or byte by byte)."""
    if len(wire) < 2:
        return [wire] if wire else []
    if data.draw(st.integers(0, 9), label="byte_by_byte") == 0:
        return [wire[i : i + 1] for i in range(len(wire))]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in zip(bounds, bounds[1:])]


# --------------------------------------------------------------------------
# A model of what the spec dispatches for the items we send
# --------------------------------------------------------------------------


class Expected(t.NamedTuple):
    type: str
    data: t.Any  # the str the client gets, or the JSON value (compared parsed)
    is_json: bool
    last_id: str
    own_id: str | None
    retry: int | None


def normalize(text: str) -> str:
    """The spec turns CRLF and CR in data into LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def model(items: t.Iterable[Event | bytes], retry: int | None = None) -> list[Expected]:
    """What a browser dispatches for a stream of ``Event``\\ s and keep-alives.

    Written from the spec, not from the encoder: each event's fields apply in
    order and a block with no data dispatches nothing.
    """
    last_id = ""
    out = []
    for item in items:
        if isinstance(item, bytes):  # HEARTBEAT, OPEN: comment lines
            continue
        if item.data is None and item.event is None and item.id is None and item.retry is None:
            continue  # comment only: no blank line, not a block of its own
        if item.retry is not None:
            retry = item.retry
        if item.id is not None:
            last_id = item.id
        if item.data is not None:
            is_json = not isinstance(item.data, str)
            data = item.data if is_json else normalize(item.data)
            out.append(Expected(item.event or M, data, is_json, last_id, item.id, retry))
        retry = None  # the blank line ends the block that carried it
    return out


def check(parser: Parser, got: list[Parsed], expected: list[Expected]) -> None:
    assert len(got) == len(expected), (got, expected)
    for g, e in zip(got, expected):
        assert g.type == e.type
        if e.is_json:
            assert "\n" not in g.data  # one data line
            assert json.loads(g.data) == e.data
        else:
            assert g.data == e.data
        assert g.id == (e.last_id if parser.ids == "last" else e.own_id)
        if parser.retry:
            assert g.retry == e.retry


def wire_of(items: t.Iterable[Event | bytes], retry: int | None = None) -> bytes:
    head = b"" if retry is None else retry_line(retry)
    return head + b"".join(i if isinstance(i, bytes) else encode_item(i) for i in items)


# --------------------------------------------------------------------------
# Properties through the oracles
# --------------------------------------------------------------------------

oracles = pytest.mark.parametrize("parser", ORACLES, ids=ORACLE_IDS)


@oracles
@PROPERTY
@given(text=data_texts, data=st.data())
def test_str_data_round_trips(parser: Parser, text: str, data: st.DataObject) -> None:
    wire = Event(text).encode()
    got = parser.parse(split(data, wire))
    assert [(e.type, e.data) for e in got] == [(M, normalize(text))]


@oracles
@PROPERTY
@given(value=json_values, data=st.data())
def test_json_data_round_trips(parser: Parser, value: t.Any, data: st.DataObject) -> None:
    wire = Event(value).encode()
    assert wire.count(b"\n") == 2  # "data: <json>\n\n": one line
    (got,) = parser.parse(split(data, wire))
    assert json.loads(got.data) == value


@oracles
@PROPERTY
@given(event=events_with_data(), data=st.data())
def test_event_round_trips(parser: Parser, event: Event, data: st.DataObject) -> None:
    check(parser, parser.parse(split(data, event.encode())), model([event]))


@oracles
@PROPERTY
@given(
    items=st.lists(st.one_of(events_with_data(), keep_alives), max_size=5),
    retry=retries,
    data=st.data(),
)
def test_stream_round_trips(
    parser: Parser, items: list[Event | bytes], retry: int | None, data: st.DataObject
) -> None:
    wire = wire_of(items, retry)
    check(parser, parser.parse(split(data, wire)), model(items, retry))


@pytest.mark.parametrize("parser", [p for p in ORACLES if p.no_dispatch_without_data], ids=repr)
@PROPERTY
@given(
    items=st.lists(st.one_of(events_with_data(), events_without_data(), keep_alives), max_size=6),
    retry=retries,
    data=st.data(),
)
def test_stream_with_blocks_without_data_round_trips(
    parser: Parser, items: list[Event | bytes], retry: int | None, data: st.DataObject
) -> None:
    # httpx-sse and openai dispatch an empty event for such a block: left out
    wire = wire_of(items, retry)
    check(parser, parser.parse(split(data, wire)), model(items, retry))


stream_items = st.one_of(
    data_texts,
    json_values,
    events_with_data(),
    keep_alives.filter(lambda k: isinstance(k, Event)),
)


@oracles
@PROPERTY
@given(items=st.lists(stream_items, max_size=5), first_id=st.integers(0, 10**9), data=st.data())
def test_numbered_stream_round_trips(
    parser: Parser, items: list[t.Any], first_id: int, data: st.DataObject
) -> None:
    # what sse_route(ids=True) does: number each item that takes_id() says takes one
    chunks, sent, next_id = [], [], first_id
    for item in items:
        if takes_id(item):
            chunks.append(encode_item(item, next_id))
            event = item if isinstance(item, Event) else Event(item)
            sent.append(
                Event(
                    event.data,
                    event=event.event,
                    id=next_id,
                    retry=event.retry,
                    comment=event.comment,
                )
            )
            next_id += 1
        else:
            chunks.append(encode_item(item))
            sent.append(item)
    expected = model(sent)
    assert all(e.own_id is not None for e in expected)  # every dispatched event has an id
    check(parser, parser.parse(split(data, b"".join(chunks))), expected)


@oracles
@PROPERTY
@given(data=st.data())
def test_spec_examples_survive_any_chunking(parser: Parser, data: st.DataObject) -> None:
    # includes cuts between CR and LF: our encoder never writes CR, the spec examples do
    examples = [x for x in SPEC_EXAMPLES if (parser.name, x) not in SPEC_DEVIATIONS]
    example = data.draw(st.sampled_from(examples), label="example")
    eol = data.draw(st.sampled_from(list(LINE_ENDINGS.values())), label="eol")
    stream, events = SPEC_EXAMPLES[example]
    wire = _with_endings(stream, eol)
    got = parser.parse(split(data, wire))
    assert [(e.type, e.data, e.id) for e in got] == _expected(parser, events)


def _handled_by_requests_sse(item: Event | bytes) -> bool:
    if isinstance(item, bytes):
        return True
    if isinstance(item.data, str):
        text = normalize(item.data)
        if text.endswith("\n") or any(line.startswith(" ") for line in text.split("\n")):
            return False
    return item.event != "" and not any(
        v is not None and v.startswith(" ") for v in (item.event, item.id)
    )


@PROPERTY
@given(
    items=st.lists(st.one_of(events_with_data(), events_without_data(), keep_alives), max_size=5),
    data=st.data(),
)
def test_requests_sse_round_trip_restricted(
    items: list[Event | bytes], data: st.DataObject
) -> None:
    # requests-sse is not conformant (module docstring): only values it can
    # carry, i.e. no value beginning with a space, no data ending in a newline,
    # no empty event type. It still checks line splitting, UTF-8 across chunks,
    # comments and lastEventId.
    items = [i for i in items if _handled_by_requests_sse(i)]
    wire = wire_of(items)
    check(REQUESTS_SSE, REQUESTS_SSE.parse(split(data, wire)), model(items))


# --------------------------------------------------------------------------
# Properties of the encoder alone
# --------------------------------------------------------------------------

FIELD_PREFIXES = (b"data: ", b"event: ", b"id: ", b"retry: ", b": ")


@PROPERTY
@given(event=st.one_of(events_with_data(), events_without_data(), keep_alives))
def test_wire_shape(event: Event | bytes) -> None:
    wire = event if isinstance(event, bytes) else event.encode()
    assert b"\r" not in wire
    wire.decode("utf-8")  # valid UTF-8
    assert wire.endswith(b"\n")
    lines = wire[:-1].split(b"\n")
    dispatching = isinstance(event, Event) and (
        event.data is not None
        or event.event is not None
        or event.id is not None
        or event.retry is not None
    )
    if dispatching:
        assert lines[-1] == b""  # the blank line that ends the block
        lines = lines[:-1]
    for line in lines:
        assert line == b":" or line.startswith(FIELD_PREFIXES), line
        assert line != b""  # only the last line is blank


@PROPERTY
@given(
    before=texts(max_size=4),
    brk=st.sampled_from(LINE_BREAKS),
    after=texts(max_size=4),
    field=st.sampled_from(["event", "id"]),
)
def test_line_breaks_in_event_or_id_always_raise(
    before: str, brk: str, after: str, field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^Event {field} "):
        Event("x", **{field: before + brk + after})  # type: ignore[arg-type]


@PROPERTY
@given(before=texts(exclude="\r\n", max_size=4), after=texts(exclude="\r\n", max_size=4))
def test_nul_in_id_always_raises(before: str, after: str) -> None:
    with pytest.raises(ValueError, match=r"^Event id must not contain NUL"):
        Event("x", id=before + "\x00" + after)


@PROPERTY
@given(value=st.one_of(data_texts, json_values), id=st.none() | st.integers(0, 10**12))
def test_encode_item_matches_event(value: t.Any, id: int | None) -> None:
    assert encode_item(value, id) == Event(value, id=id).encode()
    assert takes_id(value)
