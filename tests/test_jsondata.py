"""Event data as JSON: the orjson path gives the standard library's bytes or
its error for every value, and an app's own JSON provider is honoured."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import decimal
import enum
import fractions
import json
import math
import random
import re
import struct
import subprocess
import sys
import time
import typing as t
import uuid

import orjson
import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider, JSONProvider
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_evstream import Event, EvStream, jsondata, sse_route
from flask_evstream import event as event_module
from flask_evstream.event import data_text, encode_item

from .conftest import ROOT

# -- the two paths --------------------------------------------------------------


@contextlib.contextmanager
def stdlib_only() -> t.Iterator[None]:
    """Encode event data as without orjson (the standard library's path)."""
    saved = event_module._dumpb
    event_module._dumpb = lambda value: None
    try:
        yield
    finally:
        event_module._dumpb = saved


def outcome(make: t.Callable[[], t.Any]) -> tuple[t.Any, ...]:
    """What ``make()`` gives: its result, or its exception's type and message."""
    try:
        return ("ok", make())
    except Exception as e:
        return ("raised", type(e), str(e))


def both(make: t.Callable[[], t.Any]) -> tuple[tuple[t.Any, ...], tuple[t.Any, ...]]:
    fast = outcome(make)
    with stdlib_only():
        slow = outcome(make)
    return fast, slow


def assert_same(value: t.Any) -> None:
    """Event(value), encode_item(value) and data_text(value) agree on both paths."""
    for make in (
        lambda: Event(value).encode(),
        lambda: Event(value, event="e", id=7, retry=0, comment="c").encode(),
        lambda: encode_item(value),
        lambda: encode_item(value, 3),
        lambda: data_text(value),
    ):
        fast, slow = both(make)
        assert fast == slow, (value, fast, slow)


def test_the_suite_runs_with_orjson() -> None:
    assert jsondata.FAST


# -- values ---------------------------------------------------------------------


class Plain(enum.Enum):
    A = 1
    B = "b"


class Number(enum.IntEnum):
    ONE = 1


class Word(str, enum.Enum):
    A = "a"


class Real(float, enum.Enum):
    HALF = 0.5
    SMALL = 1e-7


class Truth(int, enum.Enum):
    """An int enum whose value (True) is not its int content (1)."""

    def __new__(cls, content: int, value: t.Any) -> Truth:
        member = int.__new__(cls, content)
        member._value_ = value
        return member

    YES = (1, True)


class Liar(enum.Enum):
    """An enum member that says it equals anything (loose checks fall for it)."""

    X = 3

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = enum.Enum.__hash__


class Text(str):
    pass


class Integer(int):
    pass


class Float(float):
    def __repr__(self) -> str:
        return "not a float"


class Mapping(dict):  # type: ignore[type-arg]
    pass


class Items(list):  # type: ignore[type-arg]
    pass


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Record:
    a: int = 1


class Thing:
    pass


SURPRISES: list[t.Any] = [
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
    datetime.date(2024, 1, 2),
    datetime.time(3, 4),
    datetime.timedelta(seconds=1),
    uuid.UUID(int=12345),
    Plain.A,
    Plain.B,
    Number.ONE,
    Word.A,
    Real.HALF,
    Real.SMALL,
    Truth.YES,
    Liar.X,
    Text("text"),
    Text("\ud800"),
    Integer(5),
    Integer(2**70),
    Float(2.5),
    Float(1e-7),
    Float("nan"),
    Mapping(a=1),
    Mapping({1: 2}),
    collections.OrderedDict(b=1, a=2),
    collections.defaultdict(int, a=1),
    Items([1, 2]),
    Point(1, 2),
    Record(),
    {1, 2},
    frozenset(),
    b"bytes",
    bytearray(b"x"),
    memoryview(b"x"),
    Thing(),
    decimal.Decimal("1.5"),
    fractions.Fraction(1, 3),
    complex(1, 2),
    range(3),
    orjson.Fragment(b'{"raw":true}'),
    Ellipsis,
    NotImplemented,
    type,
]

TRICKY_FLOATS = [
    0.0,
    -0.0,
    1e16,
    -1e16,
    1e15,
    9999999999999998.0,
    1e-7,
    1e-5,
    1e-4,
    9.999999999999999e-05,
    0.0001,
    0.00011,
    5e-324,
    2.2250738585072014e-308,
    1.7976931308623157e308,
    123456789012345678.0,
    0.1,
    1 / 3,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
]

TRICKY_INTS = [0, -1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**40]

TRICKY_TEXT = [
    "",
    "\x00",
    "\x1f",
    "\x7f",
    "\x80",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\ud800",
    "\udfff",
    "\ud83d\ude00",  # a surrogate pair written as two lone surrogates
    '"',
    "\\",
    "/",
    "</script>",
    "\b\f\n\r\t",
    "é",
    "😀",
    "\U0010ffff",
]

texts = st.lists(
    st.one_of(st.sampled_from(TRICKY_TEXT), st.characters(exclude_categories=())),
    max_size=6,
).map("".join)
floats = st.one_of(st.floats(), st.sampled_from(TRICKY_FLOATS))
ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**72), max_value=2**72),
    st.sampled_from(TRICKY_INTS),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    texts,
    st.sampled_from(SURPRISES),
)
keys = st.one_of(
    texts, ints, floats, st.booleans(), st.none(), st.sampled_from([Text("k"), Word.A])
)


def containers(children: st.SearchStrategy[t.Any]) -> st.SearchStrategy[t.Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(texts, children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.lists(children, max_size=3).map(Items),
        st.dictionaries(texts, children, max_size=3).map(Mapping),
        st.tuples(children, children).map(lambda p: Point(*p)),
    )


values = st.recursive(leaves, containers, max_leaves=12)

#: Values made only of what the fast path takes: JSON of these must come
#: from orjson (the speed of the common case depends on it).
plain_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(min_value=1e-4, max_value=1e15) | st.just(0.0) | st.just(-0.0),
        st.floats(min_value=-1e15, max_value=-1e-4),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(), children, max_size=4),
    ),
    max_leaves=12,
)


# -- properties -----------------------------------------------------------------


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_fast_and_stdlib_agree_on_any_value(value: t.Any) -> None:
    assert_same(value)


@settings(max_examples=500, deadline=None)
@given(value=plain_values)
def test_plain_values_take_the_fast_path(value: t.Any) -> None:
    out = jsondata.dumpb(value)
    assert out is not None
    assert out == jsondata.stdlib_dumps(value).encode()
    assert_same(value)


@pytest.mark.parametrize("value", SURPRISES, ids=repr)
def test_refused_and_odd_types(value: t.Any) -> None:
    assert_same(value)
    assert_same([value])
    assert_same({"k": value})


@pytest.mark.parametrize("value", TRICKY_FLOATS + TRICKY_INTS + TRICKY_TEXT, ids=repr)
def test_tricky_leaves(value: t.Any) -> None:
    assert_same([value])
    assert_same({"k": value})
    if not isinstance(value, str):
        assert_same(value)
        assert_same({value: 1})  # a non-str key
    else:
        assert_same({value: value})


@pytest.mark.parametrize(
    "value",
    [
        {1: "a", "1": "b"},
        {True: 1, None: 2, 1.5: 3},
        {float("nan"): 1},
        {(1, 2): 3},
        {Text("k"): 1},
        {Word.A: 1},
        {2**70: 1},
        (1, (2, [3, {"a": (4,)}])),
        [],
        {},
        (),
    ],
    ids=repr,
)
def test_keys_and_containers(value: t.Any) -> None:
    assert_same(value)


def nested(depth: int) -> list[t.Any]:
    value: list[t.Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [1, 150, jsondata.MAX_DEPTH, 254, 255, 256, 400, 5000])
def test_deep_nesting(depth: int) -> None:
    assert_same(nested(depth))


def test_a_cycle_is_the_stdlib_error() -> None:
    loop: list[t.Any] = [1]
    loop.append(loop)
    fast, slow = both(lambda: Event(loop).encode())
    assert fast == slow
    assert fast[:2] == ("raised", TypeError) and "Circular reference" in fast[2]


def test_the_known_traps_give_the_stdlib_result() -> None:
    # Each of these differs between orjson and the standard library.
    for value in (float("nan"), float("inf"), -float("inf")):  # orjson: null
        with pytest.raises(TypeError, match="Out of range float values"):
            Event({"x": value})
    assert Event([1e16, 1e-7, 1e-5]).encode() == b"data: [1e+16,1e-07,1e-05]\n\n"
    assert Event({"n": 2**64}).encode() == b'data: {"n":18446744073709551616}\n\n'
    assert (
        Event({1: None, False: 2, None: 3}).encode() == b'data: {"1":null,"false":2,"null":3}\n\n'
    )
    assert Event([(1, 2)]).encode() == b"data: [[1,2]]\n\n"
    assert Event([Truth.YES, Number.ONE, Word.A]).encode() == b'data: [1,1,"a"]\n\n'
    for refused in (uuid.UUID(int=1), Plain.A, Liar.X, datetime.date(2024, 1, 1), Record()):
        with pytest.raises(TypeError, match="is not JSON serializable"):
            Event([refused])
    with pytest.raises(ValueError, match="lone surrogate"):
        Event(["\ud800"])
    assert Event(["\u2028\x7f\x00é"]).encode() == 'data: ["\u2028\x7f\\u0000é"]\n\n'.encode()


# -- what the fast path relies on, checked against the installed orjson --------


def test_every_code_point_is_escaped_as_the_stdlib_does() -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    everything = "".join(chars)
    for value in (chars, {c: c for c in chars[:0x3000]}, [everything], {everything: everything}):
        out = jsondata.dumpb(value)
        assert out is not None
        assert out == jsondata.stdlib_dumps(value).encode()
    out = jsondata.dumpb([everything])
    assert out is not None and b"\n" not in out and b"\r" not in out


def trusted(f: float) -> bool:
    return f == 0.0 or 1e-4 <= abs(f) < 1e16


def float_samples() -> t.Iterator[float]:
    rnd = random.Random(8)
    for _ in range(200_000):
        yield struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
    for _ in range(50_000):
        yield rnd.uniform(-1e6, 1e6)
        yield round(rnd.uniform(-1e4, 1e4), rnd.randint(0, 8))
        yield rnd.random() * 10 ** rnd.randint(-12, 20)
        yield float(rnd.getrandbits(rnd.randint(1, 60)))
    for e in range(-330, 310):
        for m in (1.0, 2.0, 5.0, 9.999999999999999, 1.0000000000000002, 123456789.0):
            with contextlib.suppress(OverflowError):
                yield m * 10.0**e
            yield float(f"{m}e{e}")
    for k in range(-1074, 1024):
        x = 2.0**k
        yield from (math.nextafter(x, 0.0), x, math.nextafter(x, math.inf))
    for edge in (1e-4, 1e16):
        x = edge
        for _ in range(50):
            yield x
            x = math.nextafter(x, math.inf)
        x = edge
        for _ in range(50):
            x = math.nextafter(x, 0.0)
            yield x


def test_floats_orjson_is_trusted_with_are_written_as_repr() -> None:
    checked = 0
    for f in float_samples():
        for value in (f, -f):
            out = jsondata.dumpb([value])
            if trusted(value):
                assert out == f"[{value!r}]".encode(), value
                checked += 1
            else:
                assert out is None, value
    assert checked > 300_000


def test_orjson_refuses_what_the_fast_path_leaves_to_it() -> None:
    # Non-str and str-subclass keys, ints past 64 bits, lone surrogates: if a
    # new orjson took these, its bytes would differ from the standard library's.
    for value in (
        {1: 1},
        {Text("k"): 1},
        {Word.A: 1},
        [2**64],
        [-(2**63) - 1],
        ["\ud800"],
        {"\udfff": 1},
    ):
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(value)
        assert jsondata.dumpb(value) is None


def test_openai_chunks_take_the_fast_path() -> None:
    chunk = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "hello ✓\n"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    }
    logprobs = {
        "content": [
            {"token": "hi", "logprob": -0.31725305, "bytes": [104, 105], "top_logprobs": []}
        ]
    }
    for value in (chunk, {**chunk, "logprobs": logprobs}):
        out = jsondata.dumpb(value)
        assert out is not None
        assert out == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        assert Event(value).encode() == b"data: " + out + b"\n\n"


def test_without_orjson_the_stdlib_path_is_used() -> None:
    code = (
        "import sys; sys.modules['orjson'] = None\n"
        "from flask_evstream import Event, jsondata\n"
        "assert not jsondata.FAST and jsondata.dumpb({'a': 1}) is None\n"
        "assert Event({'a': [1e16, None]}).encode() == b'data: {\"a\":[1e+16,null]}\\n\\n'\n"
        "try:\n"
        "    Event({'a': float('nan')})\n"
        "except TypeError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "Event data must be a str or a JSON-serializable value (dict, list, finite number,"
        " bool, None), got dict: Out of range float values are not JSON compliant"
    )


# -- an app's own JSON provider ---------------------------------------------------


class SpacedProvider(JSONProvider):
    """Sorted keys, indented: differs from the compact encoding in every way."""

    def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        return json.dumps(obj, sort_keys=True, indent=1, default=str)

    def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
        return json.loads(s)


class DatesProvider(DefaultJSONProvider):
    """A subclass of Flask's default: the app's own."""

    sort_keys = False

    @staticmethod
    def default(o: t.Any) -> t.Any:
        if isinstance(o, datetime.date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


CHUNK = {"b": [1, 2.5], "a": {"d": None, "c": "é"}}
SPACED = '{\n "a": {\n  "c": "\\u00e9",\n  "d": null\n },\n "b": [\n  1,\n  2.5\n ]\n}'
SPACED_LINES = "".join(f"data: {line}\n" for line in SPACED.split("\n")).encode() + b"\n"


def provider_app(provider: type[JSONProvider] | None) -> tuple[Flask, EvStream]:
    app = Flask("provider")
    if provider is not None:
        app.json_provider_class = provider
        app.json = provider(app)
    app.config.update(TESTING=True, EVSTREAM_HEARTBEAT=0.2)
    sse = EvStream(app)

    @app.get("/gen")
    @sse_route()
    def gen() -> t.Iterator[t.Any]:
        yield CHUNK
        yield Event(CHUNK, event="made", id=1)
        yield "text"
        yield [datetime.date(2024, 1, 2)] if provider is not None else [1]

    @app.get("/sub")
    @sse_route()
    def sub() -> t.Any:
        return sse.subscribe("news", last_event_id="0")

    return app, sse


def test_an_sse_route_generator_uses_the_apps_provider() -> None:
    app, _ = provider_app(SpacedProvider)
    body = app.test_client().get("/gen").get_data()
    assert body == (
        SPACED_LINES
        + b"event: made\nid: 1\n"
        + SPACED_LINES
        + b"data: text\n\n"
        + b'data: [\ndata:  "2024-01-02"\ndata: ]\n\n'
    )


def test_a_default_provider_subclass_is_the_apps_own() -> None:
    app, _ = provider_app(DatesProvider)
    body = app.test_client().get("/gen").get_data()
    compact = b'data: {"b": [1, 2.5], "a": {"d": null, "c": "\\u00e9"}}\n'
    assert body == (
        compact + b"\n" + b"event: made\nid: 1\n" + compact + b"\n"
        b"data: text\n\n" + b'data: ["2024-01-02"]\n\n'
    )


def test_flasks_default_provider_keeps_the_compact_encoding() -> None:
    app, _ = provider_app(None)
    app.json.sort_keys = True  # type: ignore[attr-defined]  # still Flask's provider
    body = app.test_client().get("/gen").get_data()
    compact = 'data: {"b":[1,2.5],"a":{"d":null,"c":"é"}}\n'.encode()
    assert body == (
        compact + b"\n" + b"event: made\nid: 1\n" + compact + b"\ndata: text\n\n" + b"data: [1]\n\n"
    )


def read_bytes(response: t.Any, size: int, timeout: float = 5.0) -> bytes:
    """The first ``size`` bytes of a streamed body's events (the opening
    comment and heartbeats, each a chunk of its own, left out)."""
    got = b""
    deadline = time.monotonic() + timeout
    try:
        for chunk in response.response:
            if chunk not in (b":\n", b": ping\n"):
                got += chunk
            if len(got) >= size or time.monotonic() > deadline:
                break
    finally:
        response.close()
    return got


def test_publish_uses_the_apps_provider() -> None:
    app, sse = provider_app(SpacedProvider)
    sse.publish("news", CHUNK)  # no app context: the only app
    with app.app_context():
        sse.publish("news", CHUNK, event="ctx")
    sse.publish("news", "text")
    expected = (
        b"id: 1\n" + SPACED_LINES + b"event: ctx\nid: 2\n" + SPACED_LINES + b"id: 3\ndata: text\n\n"
    )
    response = app.test_client().get("/sub", buffered=False)
    assert read_bytes(response, len(expected)) == expected


def test_publish_with_the_default_provider_is_compact() -> None:
    app, sse = provider_app(None)
    sse.publish("news", CHUNK)
    expected = 'id: 1\ndata: {"b":[1,2.5],"a":{"d":null,"c":"é"}}\n\n'.encode()
    response = app.test_client().get("/sub", buffered=False)
    assert read_bytes(response, len(expected)) == expected


def test_the_apps_provider_only_applies_in_its_context() -> None:
    app, _ = provider_app(SpacedProvider)
    compact = 'data: {"b":[1,2.5],"a":{"d":null,"c":"é"}}\n\n'.encode()
    assert Event(CHUNK).encode() == compact
    with app.app_context():
        assert Event(CHUNK).encode() == SPACED_LINES
        assert Event("text").encode() == b"data: text\n\n"
        assert data_text(CHUNK) == SPACED
    assert data_text(CHUNK, app) == SPACED
    assert Event(CHUNK).encode() == compact


class FailingProvider(SpacedProvider):
    def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        raise ValueError("no thanks")


class BytesProvider(SpacedProvider):
    def dumps(self, obj: t.Any, **kwargs: t.Any) -> t.Any:
        return b"{}"


def test_provider_errors_name_the_provider() -> None:
    for provider, message in (
        (
            FailingProvider,
            "Event data must be a str or a value the app's JSON provider (FailingProvider)"
            " can serialize, got dict: no thanks",
        ),
        (
            BytesProvider,
            "The app's JSON provider (BytesProvider) must return a str from dumps(),"
            " got bytes for event data dict",
        ),
    ):
        app = Flask("failing")
        app.json = provider(app)
        with app.app_context(), pytest.raises(TypeError) as info:
            Event({"a": 1})
        assert str(info.value) == message
        assert Event("str data").encode() == b"data: str data\n\n"


def test_protocol_events_keep_the_librarys_json() -> None:
    app = Flask("gap")
    app.json = SpacedProvider(app)
    app.config.update(TESTING=True, EVSTREAM_HEARTBEAT=0.2, EVSTREAM_HISTORY=2)
    sse = EvStream(app)

    @app.get("/sub")
    @sse_route()
    def sub() -> t.Any:
        return sse.subscribe("news", last_event_id="1")

    for i in range(5):
        sse.publish("news", str(i))
    expected = b'event: evstream-gap\ndata: {"channels":["news"],"last_event_id":"1"}\n\n'
    got = read_bytes(app.test_client().get("/sub", buffered=False), len(expected))
    assert got.startswith(expected), got  # then the events the history kept


#: Made at import, outside any app context: the compact encoding, for good.
MADE_OUTSIDE = Event(CHUNK, event="outside", id=5, comment="made at import")


def test_a_resumable_stream_uses_the_apps_provider(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("resumable-provider")
    app.json = SpacedProvider(app)
    app.config.update(TESTING=True, EVSTREAM_HEARTBEAT=0.2)
    EvStream(app)

    @app.get("/answer")
    @sse_route(resumable=True)
    def answer() -> t.Iterator[t.Any]:
        yield CHUNK
        yield Event(CHUNK, event="made", id="own")
        yield MADE_OUTSIDE  # its id and comment dropped, its data as made
        raise RuntimeError("model crashed")

    client = app.test_client()
    response = client.get("/answer")
    first = b"".join(response.response)
    # The log, read back by a resume from the start.
    resumed = b"".join(
        client.get(
            response.headers["Content-Location"], headers={"Last-Event-ID": "x" * 24 + ".1"}
        ).response
    )
    compact = 'data: {"b":[1,2.5],"a":{"d":null,"c":"é"}}\n\n'.encode()
    for body in (first, resumed):
        # Leave out the comments and the ids (they hold the random stream id).
        assert re.sub(rb"(?m)^(:.*|id: .*)\n", b"", body) == (
            SPACED_LINES
            + b"event: made\n"
            + SPACED_LINES
            + b"event: outside\n"
            + compact
            + b'event: evstream-end\ndata: {"reason":"failed"}\n\n'
        )
    assert "model crashed" in caplog.text
