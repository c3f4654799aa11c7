"""An OpenAI-compatible ``POST /v1/chat/completions``.

With ``"stream": true`` the answer is a resumable stream of OpenAI's chunk
objects (a first chunk with the role, one per token, a last one with
``finish_reason``, then ``data: [DONE]``): the official ``openai`` client
reads it, and ``evstream.js`` resumes it after a reload and stops it with the
Stop button. Without it, one ``chat.completion`` object with the same text.
Bad requests get OpenAI's error shape with a 400.
"""

from __future__ import annotations

import secrets
import time
import typing as t

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from flask_evstream import sse_route

from .models import TOKEN, Messages, Model, content_text

bp = Blueprint("chat", __name__)

ROLES = ("system", "developer", "user", "assistant", "tool")


class BadRequest(Exception):
    """A request OpenAI would refuse: the message and the parameter."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def error_response(message: str, param: str | None, status: int = 400) -> tuple[Response, int]:
    """OpenAI's error JSON."""
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }
    return jsonify(body), status


class Request(t.NamedTuple):
    model: str
    messages: Messages
    stream: bool
    limit: int | None
    include_usage: bool


def parse(body: t.Any) -> Request:
    """Check a chat completion request as OpenAI does (the parts the demo
    uses).

    :raises BadRequest: naming the parameter, what is allowed and what came.
    """
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter (a non-empty string).", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        got = "an empty array" if messages == [] else type(messages).__name__
        raise BadRequest(f"'messages' must be a non-empty array, got {got}.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object.", f"messages[{i}]")
        if message.get("role") not in ROLES:
            raise BadRequest(
                f"messages[{i}].role must be one of {', '.join(ROLES)};"
                f" got {message.get('role')!r}.",
                f"messages[{i}].role",
            )
        content = message.get("content")
        if not (content is None or isinstance(content, (str, list))):
            raise BadRequest(
                f"messages[{i}].content must be a string or an array of parts.",
                f"messages[{i}].content",
            )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be a boolean, got {stream!r}.", "stream")
    limit = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{key}' must be an integer >= 1, got {value!r}.", key)
        limit = value
    n = body.get("n", 1)
    if n != 1:
        raise BadRequest(
            f"This server makes one choice per request: 'n' must be 1, got {n!r}.", "n"
        )
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", "stream_options")
    return Request(model, messages, stream, limit, bool(options.get("include_usage")))


def source() -> Model:
    """The app's token source (offline model or upstream)."""
    return t.cast(Model, current_app.extensions["demo"]["model"])


def _usage(messages: Messages, completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(len(content_text(m.get("content")).split()) for m in messages)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@bp.get("/")
def page() -> str:
    return render_template("chat.html", model=current_app.config["DEMO_MODEL"])


@bp.post("/v1/chat/completions")
@sse_route(resumable=True)
def completions() -> t.Any:
    try:
        req = parse(request.get_json(silent=True))
    except BadRequest as e:
        return error_response(e.message, e.param)
    completion_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())
    if not req.stream:
        tokens = TOKEN.findall(source().complete(req.messages, req.model))
        finish = "stop"
        if req.limit is not None and len(tokens) > req.limit:
            tokens, finish = tokens[: req.limit], "length"
        return jsonify(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": req.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": _usage(req.messages, len(tokens)),
            }
        )
    return _chunks(source(), req, completion_id, created)


def _chunks(model: Model, req: Request, completion_id: str, created: int) -> t.Iterator[t.Any]:
    """The answer as OpenAI's chunk objects, then ``[DONE]``."""

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, t.Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    finish = "stop"
    count = 0
    tokens = model.stream(req.messages, req.model)
    try:
        for token in tokens:
            yield chunk({"content": token})
            count += 1
            if req.limit is not None and count >= req.limit:
                finish = "length"
                break
    finally:
        # Stop pressed, or the stream cancelled: stop the model too.
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
    yield chunk({}, finish)
    if req.include_usage:
        yield {**chunk({}), "choices": [], "usage": _usage(req.messages, count)}
    yield "[DONE]"


__all__ = ["bp", "parse", "BadRequest"]
