"""evstream.js's parser in node, against the vectors the Python parsers are
checked with (the WHATWG probes and examples, in every line ending, byte by
byte) and against our encoder: random events encoded by ``Event.encode()``,
cut into random byte chunks, read back equal."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest

from flask_evstream.event import Event

from .test_event_parsers import LINE_ENDINGS, PROBES, SPEC_EXAMPLES

HARNESS = Path(__file__).parent / "js" / "parse.mjs"
NODE = shutil.which("node") or "/usr/bin/node"


def run_node(cases: list[list[bytes]]) -> list[dict[str, t.Any]]:
    payload = json.dumps(
        [{"chunks": [base64.b64encode(c).decode() for c in chunks]} for chunks in cases]
    )
    done = subprocess.run(
        [NODE, str(HARNESS)], input=payload, capture_output=True, text=True, timeout=60, check=True
    )
    return t.cast("list[dict[str, t.Any]]", json.loads(done.stdout))


def test_the_whatwg_probes() -> None:
    names = list(PROBES)
    results = run_node([PROBES[n][0] for n in names])
    for name, result in zip(names, results):
        assert [(e[0], e[1]) for e in result["events"]] == PROBES[name][1], name


def test_the_spec_examples_in_every_line_ending_and_byte_by_byte() -> None:
    cases, expected = [], []
    for stream, events in SPEC_EXAMPLES.values():
        want = [[e.type, e.data, e.last_id] for e in events]
        for eol in LINE_ENDINGS.values():
            cases.append([stream.replace(b"\n", eol)])
            expected.append(want)
        cases.append([bytes([b]) for b in stream])
        expected.append(want)
    assert [r["events"] for r in run_node(cases)] == expected


def test_ids_retry_and_nul() -> None:
    [result] = run_node(
        [[b"retry: 1500\nid: a\ndata: 1\n\nid: b\x00c\ndata: 2\n\nretry: x\nid\ndata: 3\n\n"]]
    )
    assert result["events"] == [["message", "1", "a"], ["message", "2", "a"], ["message", "3", ""]]
    assert result["retries"] == [1500]


def _random_text(rng: random.Random) -> str:
    alphabet = [
        "a",
        " ",
        ":",
        "\n",
        "\r",
        "\r\n",
        "é",
        "😀",
        "\u2028",
        "\x85",
        "\t",
        "data: x",
        "{}",
    ]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def random_cases(count: int, seed: int = 20261202) -> tuple[list[list[bytes]], list[t.Any]]:
    """Random events encoded by ``Event.encode()``, cut at random byte
    offsets, and what the spec reads back: ``[type, data, lastEventId]``."""
    rng = random.Random(seed)
    cases, expected = [], []
    for _ in range(count):
        events, want, last_id = [], [], ""
        for _ in range(rng.randrange(1, 6)):
            data = _random_text(rng)
            kind = rng.choice([None, "update", "x y"])
            event_id = rng.choice([None, str(rng.randrange(10**6)), "s.1"])
            events.append(Event(data, event=kind, id=event_id))
            if event_id is not None:
                last_id = event_id
            # What the spec reads back: line ends normalized to LF.
            text = data.replace("\r\n", "\n").replace("\r", "\n")
            want.append([kind or "message", text, last_id])
        wire = b"".join(e.encode() for e in events)
        cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randrange(0, 8))))
        cases.append([wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])])
        expected.append(want)
    return cases, expected


def test_random_events_encoded_by_us_cut_anywhere_read_back_equal() -> None:
    cases, expected = random_cases(300)
    results = run_node(cases)
    for i, (result, want) in enumerate(zip(results, expected)):
        assert result["events"] == want, (i, cases[i])


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b""])
def test_one_leading_bom_is_ignored(prefix: bytes) -> None:
    [result] = run_node([[prefix, b"data: a\n\n"]])
    assert result["events"] == [["message", "a", ""]]
