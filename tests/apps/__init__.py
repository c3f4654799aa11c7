"""Apps served by the server tests."""

from __future__ import annotations

import typing as t


def openai_chunks(body: dict[str, t.Any]) -> t.Iterator[t.Any]:
    """What the OpenAI API streams for a chat completion, word by word, so
    the ``openai`` client can read it."""
    text = body["messages"][-1]["content"]
    for i, word in enumerate(text.split(" ")):
        yield {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": word if i == 0 else " " + word},
                    "finish_reason": None,
                }
            ],
        }
    yield "[DONE]"
