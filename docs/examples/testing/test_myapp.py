import threading

from flask_evstream import Event
from flask_evstream.testing import iter_events, read_events


# [read]
def test_countdown(client):
    response = client.get("/countdown?from=2")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = read_events(response)  # to the end of the stream, then closed
    assert [e.data for e in events] == ['{"n":2}', '{"n":1}', "liftoff"]
    assert [e.id for e in events] == ["1", "2", "3"]
    assert events[0].retry == 2000


def test_countdown_resumes_after_last_event_id(client):
    response = client.get("/countdown?from=3", headers={"Last-Event-ID": "2"})
    assert read_events(response) == [
        Event('{"n":3}', id="3", retry=2000),  # numbered on from the client's id
        Event('{"n":2}', id="4"),
        Event('{"n":1}', id="5"),
        Event("liftoff", id="6"),
    ]


def test_a_bad_request_is_refused_before_the_stream(client):
    assert client.get("/countdown?from=99").status_code == 400


# [/read]


# [broadcast]
def test_a_published_event_reaches_a_subscriber(client):
    response = client.get("/news/stream")  # subscribed when the view returns
    client.post("/news", json={"title": "Hello"})
    assert read_events(response, limit=1) == [Event('{"title":"Hello"}', event="news", id="1")]


def test_a_subscriber_replays_what_it_missed(client):
    for title in ("one", "two", "three"):
        client.post("/news", json={"title": title})
    response = client.get("/news/stream", headers={"Last-Event-ID": "1"})
    events = iter_events(response)  # an endless stream: read what you need
    assert [next(events).data for _ in range(2)] == ['{"title":"two"}', '{"title":"three"}']
    # Then live: publish from another thread while this one reads.
    threading.Timer(0.05, client.post, ("/news",), {"json": {"title": "four"}}).start()
    assert next(events).data == '{"title":"four"}'
    response.close()  # stops the stream: no_leaks checks it


# [/broadcast]
