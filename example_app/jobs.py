"""Background jobs with live progress.

``POST /jobs`` starts a job in the background (a greenlet under gunicorn's
gevent worker, a thread under ``flask run``), not in the request, and
answers at once with its id. The job publishes its progress to a channel of
its own, ``job:<id>``; the page reads it with ``EventSource`` from the start
of the channel's history, so a reload mid-job shows the bar where it is and
the job goes on where it was: it never restarts. With Redis every worker
serves every job's progress.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import typing as t

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request

from flask_evstream import last_event_id, sse_route

from .extensions import sse

bp = Blueprint("jobs", __name__)

_JOB_ID = re.compile(r"[0-9a-f]{16}")


def channel(job_id: str) -> str:
    return f"job:{job_id}"


@bp.get("/jobs")
def page() -> str:
    return render_template("jobs.html")


@bp.post("/jobs")
def start() -> tuple[Response, int]:
    """Start a job; JSON ``{"name": ...}`` optional."""
    body = request.get_json(silent=True) if request.is_json else {}
    name = (body or {}).get("name") or "Report"
    if not isinstance(name, str) or len(name) > 80:
        return jsonify({"error": "'name' must be a string of at most 80 characters."}), 400
    job_id = secrets.token_hex(8)
    steps = int(current_app.config["DEMO_JOB_STEPS"])
    delay = float(current_app.config["DEMO_JOB_STEP_SECONDS"])
    app = t.cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
    # Published before the job starts, so the page's replay always has it.
    sse.publish(
        channel(job_id), {"name": name, "percent": 0, "step": 0, "of": steps}, event="progress"
    )
    threading.Thread(target=run, args=(app, job_id, name, steps, delay), daemon=True).start()
    return jsonify({"id": job_id, "name": name, "steps": steps}), 201


def run(app: Flask, job_id: str, name: str, steps: int, delay: float) -> None:
    """The job: ``steps`` steps of ``delay`` seconds, each one published."""
    with app.app_context():
        started = time.monotonic()
        digest = hashlib.sha256(job_id.encode())
        try:
            for step in range(1, steps + 1):
                time.sleep(delay)
                digest.update(step.to_bytes(4, "big"))
                elapsed = time.monotonic() - started
                eta = elapsed / step * (steps - step)
                sse.publish(
                    channel(job_id),
                    {
                        "name": name,
                        "percent": round(100 * step / steps, 1),
                        "step": step,
                        "of": steps,
                        "eta": round(eta, 1),
                    },
                    event="progress",
                )
            sse.publish(
                channel(job_id),
                {
                    "name": name,
                    "percent": 100,
                    "step": steps,
                    "of": steps,
                    "seconds": round(time.monotonic() - started, 2),
                    "result": digest.hexdigest()[:12],
                },
                event="done",
            )
        except Exception:
            app.logger.exception("Job %s failed", job_id)
            try:
                sse.publish(
                    channel(job_id), {"name": name, "error": "the job failed"}, event="failed"
                )
            except Exception:
                app.logger.exception("Job %s: cannot publish its failure", job_id)


@bp.get("/jobs/<job_id>/events")
@sse_route
def events(job_id: str) -> t.Any:
    """The job's progress from the start of its history, then live."""
    if not _JOB_ID.fullmatch(job_id):
        abort(404)
    return sse.subscribe(channel(job_id), last_event_id=last_event_id() or "0")
