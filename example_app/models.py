"""Where the chat's tokens come from: a built-in offline model, or an
OpenAI-compatible upstream streamed through with the ``openai`` package.

Both give the answer to a conversation as an iterator of text pieces; the
chat module turns them into OpenAI's chunk objects. Closing the iterator
(the user pressed Stop, the server cancelled the stream) stops the model:
the offline one stops typing, the upstream one closes its HTTP response.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
import typing as t

Messages = list[dict[str, t.Any]]

#: What the offline model talks about.
SENTENCES = [
    "Server-sent events keep one HTTP response open and write each event the moment it is ready.",
    "A browser reads them with EventSource, or with fetch and a ReadableStream for a POST.",
    "Every event carries an id, so a client that lost its connection says where it stopped.",
    "This answer is a resumable stream: its generator runs on even if your tab goes away.",
    "Reload the page now and the text goes on from where it was, without asking the model twice.",
    "The Stop button sends a DELETE to the stream's URL, and the generator's finally block runs.",
    "Heartbeat comments keep proxies and load balancers from closing a quiet connection.",
    "With Redis as the broker, any worker on any host can resume what another one started.",
    "gunicorn's gevent worker holds thousands of open streams in one process.",
    "Nothing here is buffered: each token leaves in its own write, flushed to the socket.",
    "The same stream is readable by the official openai client, pointed at this server.",
    "A slow client is cut off and replays what it missed when it reconnects.",
    "Broadcast channels deliver one event to every subscriber, in every worker.",
    "The log of this answer stays in the broker for a while after it ends.",
    "Tokens arrive at a steady pace here, the way a real model types its answer.",
    "An event with a newline in its data is split into several data lines, as the standard says.",
]

TOKEN = re.compile(r"\s*\S+")


def prompt_of(messages: Messages) -> str:
    """The text of the last user message (the empty string if none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def content_text(content: t.Any) -> str:
    """A message's content as text: a str, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class Model(t.Protocol):
    """What the chat needs of a token source."""

    def stream(self, messages: Messages, model: str) -> t.Iterator[str]: ...

    def complete(self, messages: Messages, model: str) -> str: ...


class OfflineModel:
    """A deterministic stand-in for a chat model: the same conversation
    always gets the same answer, typed at ``tokens_per_second``.

    :param tokens_per_second: the typing pace of :meth:`stream`.
    :param words: about how many words an answer has.
    :param seed: changes every answer (to tell two instances apart).
    """

    def __init__(self, *, tokens_per_second: float, words: int, seed: int = 0) -> None:
        self.delay = 1.0 / tokens_per_second
        self.words = words
        self.seed = seed

    def answer(self, messages: Messages) -> list[str]:
        """The answer's tokens: words with their leading space, as a model's."""
        prompt = prompt_of(messages).strip()
        digest = hashlib.sha256(f"{self.seed}\0{prompt}".encode()).digest()
        rng = random.Random(digest)
        shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        text = f'You asked: "{shown}".' if shown else "Hello!"
        while len(text.split()) < self.words:
            text += " " + rng.choice(SENTENCES)
            if rng.random() < 0.2:
                text += "\n\n" + rng.choice(SENTENCES)
        return TOKEN.findall(text)

    def stream(self, messages: Messages, model: str = "") -> t.Iterator[str]:
        """The answer, one token at a time, paced."""
        for token in self.answer(messages):
            time.sleep(self.delay)
            yield token

    def complete(self, messages: Messages, model: str = "") -> str:
        """The whole answer at once (no pacing)."""
        return "".join(self.answer(messages))


class UpstreamModel:
    """An OpenAI-compatible server's answers, through the ``openai`` package.

    :param base_url: the upstream's base URL (``https://api.openai.com/v1``).
    :param api_key: its key (any string for servers that take none).
    :param model: the model to ask for; empty: the one the request names.
    """

    def __init__(self, *, base_url: str, api_key: str, model: str) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - the demo's run.sh installs it
            raise RuntimeError(
                "DEMO_UPSTREAM_BASE_URL is set but the openai package is not"
                " installed: pip install openai"
            ) from None
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0)
        self.model = model

    def stream(self, messages: Messages, model: str) -> t.Iterator[str]:
        """The upstream's content deltas as they come; closing this
        iterator closes the upstream response."""
        response = self.client.chat.completions.create(
            model=self.model or model,
            messages=t.cast(t.Any, messages),
            stream=True,
        )
        try:
            for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        finally:
            response.close()

    def complete(self, messages: Messages, model: str) -> str:
        """The upstream's whole answer."""
        completion = self.client.chat.completions.create(
            model=self.model or model, messages=t.cast(t.Any, messages)
        )
        return completion.choices[0].message.content or ""
