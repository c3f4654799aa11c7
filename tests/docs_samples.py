"""The code samples of docs/*.rst, as the tests that run them read them.

A sample is a ``.. code-block::`` (or ``.. code::``) directive or a literal
block (a paragraph ending in ``::``). Samples of our own pages carry a
``:name:`` (which Sphinx also makes a link target); a sample without one is
known by its page and its place in it, ``security.rst#1`` for the first.
``literalinclude`` samples are not collected: they are files the tests
import or run. Doctest blocks (``>>>``) are run by ``sphinx-build -b doctest``.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<kind>[\w:-]+)::\s*(?P<arg>.*)$")
_OPTION = re.compile(r"^\s*:(?P<name>[\w-]+):\s*(?P<value>.*)$")


@dataclasses.dataclass(frozen=True)
class Sample:
    #: The page, ``channels.rst``.
    page: str
    #: Its line in the page (1-based), where the block's directive is.
    line: int
    #: ``code-block`` or ``literal`` (a ``::`` paragraph).
    kind: str
    #: The language the block names (``sh``, ``javascript``, ...), or ``""``.
    language: str
    #: Its ``:name:``, or ``<page>#<n>``.
    key: str
    #: The block's text, dedented, with its inner blank lines.
    text: str


def _block(lines: list[str], start: int, indent: int) -> tuple[str, int]:
    """The indented block from ``lines[start]`` on (after blank lines):
    its dedented text and the index after it."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    body: list[str] = []
    while i < len(lines) and (
        not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
    ):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
    return textwrap.dedent("\n".join(body)) + "\n", i


def samples(page: str) -> list[Sample]:
    """Every code sample of ``docs/<page>``, in order."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[Sample] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _DIRECTIVE.match(line)
        if match and match["kind"] in ("code-block", "code", "sourcecode"):
            indent = len(match["indent"])
            name = ""
            j = i + 1
            while j < len(lines) and (option := _OPTION.match(lines[j])):
                if option["name"] == "name":
                    name = option["value"].strip()
                j += 1
            text, end = _block(lines, j, indent)
            n = len(found) + 1
            found.append(
                Sample(page, i + 1, "code-block", match["arg"].strip(), name or f"{page}#{n}", text)
            )
            i = end
            continue
        if match:
            i += 1
            continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.lstrip().startswith(".."):
            indent = len(line) - len(line.lstrip())
            text, end = _block(lines, i + 1, indent)
            n = len(found) + 1
            found.append(Sample(page, i + 1, "literal", "", f"{page}#{n}", text))
            i = end
            continue
        i += 1
    return found


def pages() -> list[str]:
    return sorted(p.name for p in DOCS.glob("*.rst"))


def sample(key: str) -> str:
    """The text of the sample ``key`` (a ``:name:`` or ``page#n``), from
    whatever page holds it."""
    for page in pages():
        for s in samples(page):
            if s.key == key:
                return s.text
    raise LookupError(f"no code sample {key!r} in docs/*.rst")


def literalincludes(page: str) -> list[str]:
    """The files ``docs/<page>`` includes with ``literalinclude``, as written."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^\s*\.\. literalinclude::\s*(\S+)", text, re.M)
