"""Headless Chromium as the client: its EventSource and fetch are the oracle."""

from __future__ import annotations

import typing as t

import pytest
from playwright.sync_api import Page, sync_playwright

from .apps.streams import TRICKY
from .conftest import Server

pytestmark = pytest.mark.server

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(gevent_server: Server) -> t.Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(gevent_server.url + "/page")
        yield page
        browser.close()


def fresh(page: Page, server: Server) -> None:
    page.goto(server.url + "/page")


def test_eventsource_reads_tricky_data_exactly(page: Page, gevent_server: Server) -> None:
    fresh(page, gevent_server)
    page.evaluate("window.listen('/tricky', ['tricky', 'end'])")
    page.wait_for_function("window.events.some((e) => e.type === 'end')", timeout=10_000)
    page.evaluate("window.source.close()")
    events = page.evaluate("window.events")
    got = [(e["type"], e["data"], e["id"]) for e in events]
    expected = [
        ("tricky", text.replace("\r\n", "\n").replace("\r", "\n"), f"t{i}")
        for i, text in enumerate(TRICKY)
    ]
    # The end event carries no id: lastEventId stays the last one set.
    assert got == [*expected, ("end", "end", f"t{len(TRICKY) - 1}")]


def test_browser_reconnects_with_last_event_id_and_stops_on_204(
    page: Page, gevent_server: Server
) -> None:
    fresh(page, gevent_server)
    page.evaluate("window.listen('/browser-resume')")
    page.wait_for_function("window.ended", timeout=20_000)
    events = page.evaluate("window.events")
    assert [(e["id"], e["data"]) for e in events] == [
        (str(step), f'{{"step":{step}}}') for step in range(1, 10)
    ]
    assert page.evaluate("window.opens") == 3


def test_fetch_post_stream_like_chatgpt(page: Page, gevent_server: Server) -> None:
    fresh(page, gevent_server)
    result = page.evaluate("window.chat('hello browser world')")
    assert result["type"] == "text/event-stream; charset=utf-8"
    assert "".join(result["chunks"]) == (
        'data: {"token":"hello"}\n\ndata: {"token":"browser"}\n\n'
        'data: {"token":"world"}\n\ndata: [DONE]\n\n'
    )


def test_events_arrive_in_the_browser_one_by_one(page: Page, gevent_server: Server) -> None:
    fresh(page, gevent_server)
    page.evaluate("window.listen('/paced?n=4&gap=0.2')")
    page.wait_for_function("window.events.length >= 4", timeout=10_000)
    page.evaluate("window.source.close()")
    events = page.evaluate("window.events")
    arrivals = [e["at"] for e in events[:4]]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # 200 ms apart when sent; bunching would show gaps near 0.
    assert min(gaps) > 100, gaps
