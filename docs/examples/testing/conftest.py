import time

import pytest
from myapp import create_app

from flask_evstream import live_streams, subscribers


@pytest.fixture
def app():
    # A new app per test: its own memory:// broker, so ids start at 1.
    # A short heartbeat: a closed stream notices it fast.
    return create_app({"TESTING": True, "EVSTREAM_HEARTBEAT": 0.1})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(autouse=True)
def no_leaks(app):
    """Fail a test that leaves a stream or a subscription open."""
    yield
    deadline = time.monotonic() + 5  # a generator's thread may take a moment
    while (live_streams(app) or subscribers(app)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live_streams(app) == 0, "a stream was left open: close the response"
    assert subscribers(app) == 0, "a subscription was left open"
