"""Unit tests of the wire format in ``flask_evstream.event``: exact bytes.

Every expectation here is the literal byte string a client receives. The
round trips through independent SSE parsers from PyPI (and the property
tests) are in ``test_event_parsers.py``.
"""

from __future__ import annotations

import pytest

from flask_evstream.event import HEARTBEAT, OPEN, Event, encode_item, retry_line, takes_id
from flask_evstream.testing import parse

# --------------------------------------------------------------------------
# str data
# --------------------------------------------------------------------------


def test_str_data_is_sent_as_is() -> None:
    assert Event("hello world").encode() == b"data: hello world\n\n"


def test_str_data_that_looks_like_json_is_not_re_encoded() -> None:
    assert Event('{"a": 1}').encode() == b'data: {"a": 1}\n\n'
    assert Event("42").encode() == b"data: 42\n\n"


def test_empty_string_data_dispatches_an_empty_message() -> None:
    assert Event("").encode() == b"data: \n\n"
    assert [e.data for e in parse([Event("").encode()])] == [""]


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\nb\nc", b"data: a\ndata: b\ndata: c\n\n"),
        ("a\rb\r\nc\nd", b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        # blank lines inside data stay data lines: they never end the event
        ("a\n\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\r\n\r\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\r\rb", b"data: a\ndata: \ndata: b\n\n"),
        # LF then CR is two line breaks, CR then CRLF is two line breaks
        ("a\n\rb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\r\r\nb", b"data: a\ndata: \ndata: b\n\n"),
        # line breaks at the ends, including a lone CR
        ("a\n", b"data: a\ndata: \n\n"),
        ("a\r", b"data: a\ndata: \n\n"),
        ("a\r\n", b"data: a\ndata: \n\n"),
        ("\na", b"data: \ndata: a\n\n"),
        ("\ra", b"data: \ndata: a\n\n"),
        ("\r\na", b"data: \ndata: a\n\n"),
        ("\n", b"data: \ndata: \n\n"),
        ("\r", b"data: \ndata: \n\n"),
        ("\r\n", b"data: \ndata: \n\n"),
        ("\r\n\n", b"data: \ndata: \ndata: \n\n"),
        ("\n\n\n", b"data: \ndata: \ndata: \ndata: \n\n"),
    ],
)
def test_multi_line_data_is_split_on_crlf_lf_and_lone_cr(text: str, wire: bytes) -> None:
    assert Event(text).encode() == wire
    assert b"\r" not in wire
    # the spec joins the lines with LF: CRLF and CR arrive as LF
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    assert [e.data for e in parse([wire])] == [normalized]


@pytest.mark.parametrize(
    "char",
    [
        "\u2028",  # LINE SEPARATOR
        "\u2029",  # PARAGRAPH SEPARATOR
        "\x85",  # NEXT LINE (NEL)
        "\x0c",  # FORM FEED
        "\x0b",  # VERTICAL TAB
        "\x1c",  # FILE SEPARATOR
        "\x1d",  # GROUP SEPARATOR
        "\x1e",  # RECORD SEPARATOR
    ],
    ids=["U+2028", "U+2029", "U+0085", "FF", "VT", "FS", "GS", "RS"],
)
def test_splitlines_breaks_that_are_not_sse_line_breaks_are_sent_untouched(char: str) -> None:
    text = f"a{char}b{char}"
    assert len(text.splitlines()) == 2  # str.splitlines would split here ...
    wire = Event(text).encode()
    assert wire == b"data: " + text.encode("utf-8") + b"\n\n"  # ... the encoder does not
    assert wire.count(b"data:") == 1
    assert [e.data for e in parse([wire])] == [text]


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        (" x", b"data:  x\n\n"),
        ("  two", b"data:   two\n\n"),
        (" ", b"data:  \n\n"),
        ("   ", b"data:    \n\n"),
        (":x", b"data: :x\n\n"),
        (": not a comment", b"data: : not a comment\n\n"),
        (":", b"data: :\n\n"),
        (" a\n:b\n  c", b"data:  a\ndata: :b\ndata:   c\n\n"),
        ("\t tab", b"data: \t tab\n\n"),
    ],
)
def test_data_beginning_with_space_or_colon_survives(text: str, wire: bytes) -> None:
    assert Event(text).encode() == wire
    assert [e.data for e in parse([wire])] == [text]


def test_unicode_data_is_utf8() -> None:
    text = "caf\xe9 \u20ac \u4e2d \U0001f600 \U0010ffff"
    assert Event(text).encode() == b"data: " + text.encode("utf-8") + b"\n\n"
    assert Event("\xe9").encode() == b"data: \xc3\xa9\n\n"
    assert Event("\U0001f600").encode() == b"data: \xf0\x9f\x98\x80\n\n"


def test_nul_and_bom_in_data_are_sent_untouched() -> None:
    assert Event("a\x00b").encode() == b"data: a\x00b\n\n"
    assert Event("\ufeffx").encode() == b"data: \xef\xbb\xbfx\n\n"


def test_data_cannot_inject_fields_or_events() -> None:
    text = "x\nevent: evil\nid: 666\nretry: 1\n\ndata: injected\r\r: c"
    wire = Event(text).encode()
    assert wire == (
        b"data: x\ndata: event: evil\ndata: id: 666\ndata: retry: 1\ndata: \n"
        b"data: data: injected\ndata: \ndata: : c\n\n"
    )
    events = list(parse([wire]))
    assert len(events) == 1
    assert events[0].data == text.replace("\r", "\n")
    assert events[0].event is None and events[0].id is None and events[0].retry is None


# --------------------------------------------------------------------------
# JSON data
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ({"a": 1}, b'data: {"a":1}\n\n'),
        ({"a": [1, 2], "b": {"c": None}}, b'data: {"a":[1,2],"b":{"c":null}}\n\n'),
        ([1, "two", 3.5, True, False, None], b'data: [1,"two",3.5,true,false,null]\n\n'),
        ([None], b"data: [null]\n\n"),
        ({"k": None}, b'data: {"k":null}\n\n'),
        ([], b"data: []\n\n"),
        ({}, b"data: {}\n\n"),
        ((1, 2), b"data: [1,2]\n\n"),
        (0, b"data: 0\n\n"),
        (42, b"data: 42\n\n"),
        (-7, b"data: -7\n\n"),
        (10**30, b"data: 1000000000000000000000000000000\n\n"),
        (1.5, b"data: 1.5\n\n"),
        (0.0, b"data: 0.0\n\n"),
        (-0.5, b"data: -0.5\n\n"),
        (1e100, b"data: 1e+100\n\n"),
        (True, b"data: true\n\n"),
        (False, b"data: false\n\n"),
    ],
)
def test_non_str_data_is_compact_json(value: object, wire: bytes) -> None:
    assert Event(value).encode() == wire
    assert encode_item(value) == wire


def test_json_is_not_ascii_escaped_and_is_utf8() -> None:
    assert (
        Event({"name": "Jos\xe9 \U0001f600"}).encode()
        == b'data: {"name":"Jos\xc3\xa9 \xf0\x9f\x98\x80"}\n\n'
    )
    # U+2028 is not a line break in SSE and JSON.parse accepts it raw
    assert Event(["\u2028"]).encode() == b'data: ["\xe2\x80\xa8"]\n\n'


def test_json_strings_with_line_breaks_stay_on_one_data_line() -> None:
    assert Event({"t": "a\nb\rc\r\nd"}).encode() == b'data: {"t":"a\\nb\\rc\\r\\nd"}\n\n'
    assert Event(["\x00"]).encode() == b'data: ["\\u0000"]\n\n'


def test_json_value_keeps_its_key_order() -> None:
    assert Event({"b": 1, "a": 2}).encode() == b'data: {"b":1,"a":2}\n\n'


def test_data_none_sends_no_data_field() -> None:
    assert Event().encode() == b""
    assert Event(None).encode() == b""
    assert Event(None).data is None
    assert Event(event="x").encode() == b"event: x\n\n"


# --------------------------------------------------------------------------
# event, id, retry, comment; falsy values are values
# --------------------------------------------------------------------------


def test_all_fields_in_order() -> None:
    wire = b": c\nevent: e\nid: 7\nretry: 1500\ndata: d\n\n"
    assert Event("d", event="e", id=7, retry=1500, comment="c").encode() == wire
    assert Event(comment="c", retry=1500, id=7, event="e", data="d").encode() == wire


def test_event_field() -> None:
    assert Event("x", event="update").encode() == b"event: update\ndata: x\n\n"
    assert Event({"a": 1}, event="json").encode() == b'event: json\ndata: {"a":1}\n\n'


@pytest.mark.parametrize(
    ("kwargs", "wire"),
    [
        ({"id": 0}, b"id: 0\ndata: x\n\n"),
        ({"id": ""}, b"id: \ndata: x\n\n"),
        ({"retry": 0}, b"retry: 0\ndata: x\n\n"),
        ({"event": ""}, b"event: \ndata: x\n\n"),
        ({"comment": ""}, b":\ndata: x\n\n"),
    ],
)
def test_falsy_field_values_are_values(kwargs: dict[str, object], wire: bytes) -> None:
    assert Event("x", **kwargs).encode() == wire


@pytest.mark.parametrize(
    ("kwargs", "wire"),
    [
        ({"id": 0}, b"id: 0\n\n"),
        ({"id": ""}, b"id: \n\n"),
        ({"retry": 0}, b"retry: 0\n\n"),
        ({"event": ""}, b"event: \n\n"),
    ],
)
def test_falsy_fields_without_data_still_end_the_event(
    kwargs: dict[str, object], wire: bytes
) -> None:
    assert Event(**kwargs).encode() == wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, b"data: 0\n\n"), (False, b"data: false\n\n"), ("", b"data: \n\n"), ([], b"data: []\n\n")],
)
def test_falsy_data_is_data(value: object, wire: bytes) -> None:
    assert Event(value).encode() == wire


def test_id_int_and_str() -> None:
    assert Event("x", id=7).encode() == b"id: 7\ndata: x\n\n"
    assert Event("x", id="abc-1").encode() == b"id: abc-1\ndata: x\n\n"
    assert Event("x", id=7).id == "7"
    assert Event("x", id=10**20).encode() == b"id: 100000000000000000000\ndata: x\n\n"


def test_retry_field() -> None:
    assert Event("x", retry=3000).encode() == b"retry: 3000\ndata: x\n\n"
    assert Event(retry=2**40).encode() == b"retry: 1099511627776\n\n"


@pytest.mark.parametrize(
    ("field", "value", "line"),
    [
        ("event", " sp", b"event:  sp\n"),
        ("event", ":colon", b"event: :colon\n"),
        ("event", "a:b", b"event: a:b\n"),
        ("id", " 1", b"id:  1\n"),
        ("id", ":c", b"id: :c\n"),
        ("event", "a\u2028b", "event: a\u2028b\n".encode()),
        ("id", "a\x85b", "id: a\x85b\n".encode()),
        ("event", "a\x00b", b"event: a\x00b\n"),  # NUL is fine in an event type
        ("event", "\U0001f600", "event: \U0001f600\n".encode()),
    ],
)
def test_field_values_survive(field: str, value: str, line: bytes) -> None:
    event = Event("x", **{field: value})  # type: ignore[arg-type]
    assert event.encode() == line + b"data: x\n\n"
    (parsed,) = parse([event.encode()])
    assert getattr(parsed, field) == value


def test_comment_only_event_has_no_blank_line() -> None:
    assert Event(comment="hi").encode() == b": hi\n"
    assert Event(comment="ping").encode() == HEARTBEAT
    assert Event(comment="").encode() == OPEN
    assert Event(comment=" x").encode() == b":  x\n"
    assert Event(comment="a\u2028b").encode() == ": a\u2028b\n".encode()


def test_multi_line_comment_is_split_on_every_line_break() -> None:
    assert Event(comment="a\nb\r\nc\rd").encode() == b": a\n: b\n: c\n: d\n"
    assert Event(comment="a\n\nb").encode() == b": a\n:\n: b\n"
    assert Event(comment="\n").encode() == b":\n:\n"


def test_comment_cannot_inject_an_event() -> None:
    wire = Event(comment="x\n\ndata: evil\n\n").encode()
    assert wire == b": x\n:\n: data: evil\n:\n:\n"
    assert list(parse([wire])) == []


def test_comment_with_data() -> None:
    assert Event("x", comment="c").encode() == b": c\ndata: x\n\n"


# --------------------------------------------------------------------------
# refused values
# --------------------------------------------------------------------------

LINE_BREAK_VALUES = ["a\nb", "a\rb", "a\r\nb", "\n", "\r", "\r\n", "end\n", "x\n\ndata: injected"]


@pytest.mark.parametrize("value", LINE_BREAK_VALUES)
@pytest.mark.parametrize("field", ["event", "id"])
def test_line_breaks_in_event_or_id_raise(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^Event {field} must not contain CR or LF"):
        Event("x", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^Event {field} "):
        Event(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["a\x00b", "\x00", "1\x00"])
def test_nul_in_id_raises(value: str) -> None:
    with pytest.raises(ValueError, match=r"^Event id must not contain NUL"):
        Event("x", id=value)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"retry": "5"}, TypeError, "retry"),
        ({"retry": True}, TypeError, "retry"),
        ({"retry": False}, TypeError, "retry"),
        ({"retry": 1.5}, TypeError, "retry"),
        ({"retry": 5.0}, TypeError, "retry"),
        ({"retry": -1}, ValueError, "retry"),
        ({"id": 1.5}, TypeError, "id"),
        ({"id": True}, TypeError, "id"),
        ({"id": b"1"}, TypeError, "id"),
        ({"id": [1]}, TypeError, "id"),
        ({"event": 3}, TypeError, "event"),
        ({"event": b"x"}, TypeError, "event"),
        ({"event": True}, TypeError, "event"),
        ({"comment": 3}, TypeError, "comment"),
        ({"comment": b"c"}, TypeError, "comment"),
        ({"data": object()}, TypeError, "data"),
        ({"data": b"x"}, TypeError, "data"),
        ({"data": {1, 2}}, TypeError, "data"),
        ({"data": {"a": object()}}, TypeError, "data"),
        ({"data": {(1, 2): "tuple key"}}, TypeError, "data"),
    ],
)
def test_wrong_types_raise_naming_the_field(
    kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=rf"^Event {field} must be"):
        Event(**kwargs)  # type: ignore[arg-type]


def test_circular_data_raises_type_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"^Event data must be"):
        Event(loop)


def test_allowed_values_do_not_raise() -> None:
    Event("a\nb", comment="c\rd")  # line breaks in data and comments are split
    Event("x", event="a\x00b")  # NUL is fine in an event type ...
    Event("a\x00b")  # ... and in data
    Event("x", id=-1)
    Event("x", retry=0)


# --------------------------------------------------------------------------
# encode_item, takes_id, constants
# --------------------------------------------------------------------------


def test_encode_item_event_is_sent_as_is() -> None:
    event = Event("x", event="e", comment="c")
    assert encode_item(event) == event.encode() == b": c\nevent: e\ndata: x\n\n"
    assert encode_item(Event(comment="hi")) == b": hi\n"


@pytest.mark.parametrize(
    ("item", "wire"),
    [
        ("hi", b"data: hi\n\n"),
        ("", b"data: \n\n"),
        ("a\r\nb\rc", b"data: a\ndata: b\ndata: c\n\n"),
        (" lead", b"data:  lead\n\n"),
        ({"a": 1}, b'data: {"a":1}\n\n'),
        ([1, None], b"data: [1,null]\n\n"),
        (0, b"data: 0\n\n"),
        (False, b"data: false\n\n"),
    ],
)
def test_encode_item_str_and_json(item: object, wire: bytes) -> None:
    assert encode_item(item) == wire
    assert encode_item(item) == Event(item).encode()


@pytest.mark.parametrize(
    ("item", "id", "wire"),
    [
        ("hi", 3, b"id: 3\ndata: hi\n\n"),
        ("a\nb", 4, b"id: 4\ndata: a\ndata: b\n\n"),
        ({"a": 1}, 0, b'id: 0\ndata: {"a":1}\n\n'),
        (Event("x"), 5, b"id: 5\ndata: x\n\n"),
        (Event("x", event="e"), 6, b"id: 6\nevent: e\ndata: x\n\n"),
        (Event("x", retry=10, comment="c"), 7, b"id: 7\n: c\nretry: 10\ndata: x\n\n"),
    ],
)
def test_encode_item_with_an_id(item: object, id: int, wire: bytes) -> None:
    assert encode_item(item, id) == wire
    (parsed,) = parse([wire])
    assert parsed.id == str(id)


def test_encode_item_with_id_matches_event_with_id() -> None:
    assert encode_item("x", 9) == Event("x", id=9).encode()
    assert encode_item({"k": [1]}, 9) == Event({"k": [1]}, id=9).encode()


@pytest.mark.parametrize("item", [b"x", bytearray(b"x"), memoryview(b"x")])
def test_encode_item_refuses_bytes(item: object) -> None:
    with pytest.raises(TypeError, match="decode it to str first"):
        encode_item(item)


def test_encode_item_refuses_unserializable() -> None:
    with pytest.raises(TypeError, match=r"^Event data must be"):
        encode_item(object())


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("x", True),
        ("", True),
        ({"a": 1}, True),
        ([1], True),
        (0, True),
        (Event("x"), True),
        (Event(""), True),
        (Event("x", event="e", retry=5, comment="c"), True),
        (Event("x", id=1), False),
        (Event("x", id=0), False),
        (Event("x", id=""), False),
        (Event(comment="keep-alive"), False),
        (Event(comment=""), False),
        (Event(), False),
    ],
)
def test_takes_id(item: object, expected: bool) -> None:
    assert takes_id(item) is expected


def test_constants() -> None:
    assert HEARTBEAT == b": ping\n"
    assert OPEN == b":\n"
    assert retry_line(3000) == b"retry: 3000\n"
    assert retry_line(0) == b"retry: 0\n"


def test_stream_opening_heartbeat_and_retry_dispatch_nothing_by_themselves() -> None:
    assert list(parse([OPEN, HEARTBEAT, retry_line(3000), HEARTBEAT])) == []
    stream = [retry_line(3000), OPEN, HEARTBEAT, Event("x").encode(), HEARTBEAT, b"data: y\n\n"]
    events = list(parse(stream))
    assert [(e.data, e.retry) for e in events] == [("x", 3000), ("y", None)]


# --------------------------------------------------------------------------
# Event as a value: attributes, immutability, equality, repr
# --------------------------------------------------------------------------


def test_attributes() -> None:
    event = Event({"a": 1}, event="e", id=7, retry=100, comment="c")
    assert event.data == {"a": 1}
    assert event.event == "e"
    assert event.id == "7"
    assert event.retry == 100
    assert event.comment == "c"
    empty = Event()
    assert (empty.data, empty.event, empty.id, empty.retry, empty.comment) == (None,) * 5


@pytest.mark.parametrize("name", ["data", "event", "id", "retry", "comment", "_wire", "other"])
def test_event_is_immutable(name: str) -> None:
    event = Event("x", event="e", id=1, retry=2, comment="c")
    with pytest.raises(AttributeError, match="immutable"):
        setattr(event, name, "y")
    with pytest.raises(AttributeError, match="immutable"):
        delattr(event, name)
    assert event.encode() == b": c\nevent: e\nid: 1\nretry: 2\ndata: x\n\n"
    assert not hasattr(event, "__dict__")


def test_equality_and_hash() -> None:
    assert Event("x") == Event("x")
    assert Event("x", event="e", id=1, retry=2, comment="c") == Event(
        "x", event="e", id=1, retry=2, comment="c"
    )
    assert Event("x", id=1) == Event("x", id="1")
    assert Event({"a": [1]}) == Event({"a": [1]})
    assert hash(Event("x", id=1)) == hash(Event("x", id="1"))
    assert hash(Event({"a": [1]})) == hash(Event({"a": [1]}))  # hashable with dict data
    assert len({Event("x"), Event("x"), Event("y")}) == 2
    assert Event("x") != Event("y")
    assert Event("x") != Event("x", comment="c")
    assert Event("x") != Event("x", event="message")
    assert Event("x") != Event("x", id="")
    assert Event("") != Event()
    assert Event("1") != Event(1)  # same bytes, different values
    assert Event("x") != "x"
    assert Event("x") != b"data: x\n\n"
    assert Event("x").__eq__("x") is NotImplemented


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Event(1), Event(True)),
        (Event(1), Event(1.0)),
        (Event([0]), Event([False])),
        (Event({"a": 1, "b": 2}), Event({"b": 2, "a": 1})),
    ],
    ids=["1-True", "1-1.0", "[0]-[False]", "dict-order"],
)
def test_equal_events_encode_and_hash_alike(a: Event, b: Event) -> None:
    # the hash contract: a == b implies hash(a) == hash(b); and two events
    # that send different bytes should not compare equal
    if a == b:
        assert a.encode() == b.encode()
        assert hash(a) == hash(b)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")]])
def test_non_finite_floats_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        Event(value)


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (Event(), "Event()"),
        (Event("x"), "Event(data='x')"),
        (Event(""), "Event(data='')"),
        (Event({"a": [1]}), "Event(data={'a': [1]})"),
        (Event(0, id=0, retry=0), "Event(data=0, id='0', retry=0)"),
        (
            Event("x", event="e", id=7, retry=0, comment=""),
            "Event(data='x', event='e', id='7', retry=0, comment='')",
        ),
        (Event(comment="ping"), "Event(comment='ping')"),
        (Event("a\nb"), "Event(data='a\\nb')"),
    ],
)
def test_repr(event: Event, text: str) -> None:
    assert repr(event) == text
    assert eval(repr(event)) == event  # repr round-trips


# --------------------------------------------------------------------------
# The WHATWG spec's examples ("Interpreting an event stream"), as our encoder
# writes them, read back by our parser. The spec's own bytes go through the
# PyPI parsers in test_event_parsers.py.
# --------------------------------------------------------------------------


def test_spec_example_multi_line_data() -> None:
    # "data: YHOO / data: +2 / data: 10" -> one message "YHOO\n+2\n10"
    wire = Event("YHOO\n+2\n10").encode()
    assert wire == b"data: YHOO\ndata: +2\ndata: 10\n\n"  # byte for byte the spec's stream
    assert [(e.event, e.data) for e in parse([wire])] == [(None, "YHOO\n+2\n10")]


def test_spec_example_comment_ids_and_leading_space() -> None:
    # ": test stream" fires nothing; "first event" with id 1; "second event"
    # with an empty id (a reset); " third event" keeps its one leading space
    events = [
        Event(comment="test stream"),
        Event("first event", id="1"),
        Event("second event", id=""),
        Event(" third event"),
    ]
    wire = b"".join(e.encode() for e in events)
    assert wire == (
        b": test stream\n"
        b"id: 1\ndata: first event\n\n"
        b"id: \ndata: second event\n\n"
        b"data:  third event\n\n"
    )
    parsed = [(e.data, e.id) for e in parse([wire])]
    assert parsed == [("first event", "1"), ("second event", ""), (" third event", None)]


def test_spec_example_empty_data_and_lone_newline() -> None:
    # "data" fires an empty string; "data / data" fires a single newline
    wire = Event("").encode() + Event("\n").encode()
    assert wire == b"data: \n\ndata: \ndata: \n\n"
    assert [e.data for e in parse([wire])] == ["", "\n"]


def test_spec_example_space_after_colon_is_optional() -> None:
    # "data:test" and "data: test" fire identical events; we always write the space
    assert Event("test").encode() == b"data: test\n\n"
    assert list(parse([b"data:test\n\n"])) == list(parse([Event("test").encode()]))


def test_spec_example_event_types() -> None:
    # the introduction's stream with two event types, "add" and "remove"
    events = [
        Event("73857293", event="add"),
        Event("2153", event="remove"),
        Event("113411", event="add"),
    ]
    wire = b"".join(e.encode() for e in events)
    assert wire == (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    )
    assert list(parse([wire])) == events
