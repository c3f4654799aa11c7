"""Read a resumable answer from Python, and resume it after a cut."""

import httpx
from httpx_sse import connect_sse


def ask(base_url, prompt):
    """The whole answer to ``prompt``; the POST is sent once, whatever happens."""
    text, last_id, resume_url = "", None, None
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while True:
            if resume_url is None:
                request = ("POST", "/chat", {"json": {"prompt": prompt}})
            else:  # resume where we were: never send the POST twice
                headers = {"Last-Event-ID": last_id} if last_id else {}
                request = ("GET", resume_url, {"headers": headers})
            method, url, options = request
            try:
                with connect_sse(http, method, url, **options) as source:
                    response = source.response
                    if response.status_code == 204:
                        return text  # the stream is done and we had it all
                    response.raise_for_status()
                    resume_url = resume_url or response.headers["Content-Location"]
                    for event in source.iter_sse():
                        if event.event == "evstream-end":  # cancelled, failed...
                            raise RuntimeError(f"the answer ended: {event.data}")
                        last_id = event.id
                        if event.data == "[DONE]":
                            return text
                        text += event.data
            except httpx.TransportError:
                if resume_url is None:
                    raise  # no answer was started
