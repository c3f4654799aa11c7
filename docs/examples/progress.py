"""Background jobs whose progress every page follows, also after a reload."""

import json
import secrets
import threading
import time
from pathlib import Path

from flask import Flask, current_app, render_template_string

from flask_evstream import Event, EvStream, last_event_id, sse_route

app = Flask(__name__)
app.config.update(JOB_STEPS=10, JOB_STEP_SECONDS=0.2)
app.config.from_prefixed_env()  # FLASK_JOB_STEPS=40, FLASK_EVSTREAM_BROKER_URL=...
sse = EvStream(app)


# [job]
def run_job(app, job_id):
    """The job: in a thread (a greenlet under gevent), not in the request."""
    steps, delay = app.config["JOB_STEPS"], app.config["JOB_STEP_SECONDS"]
    with app.app_context():  # publish() finds the app here
        for step in range(1, steps + 1):
            time.sleep(delay)  # the work
            progress = {"percent": round(100 * step / steps), "step": step}
            sse.publish(f"job:{job_id}", progress, event="progress")
        sse.publish(f"job:{job_id}", {"percent": 100}, event="done")


def new_job():
    job_id = secrets.token_hex(8)
    app = current_app._get_current_object()
    threading.Thread(target=run_job, args=(app, job_id)).start()
    return job_id


@app.post("/jobs")
def start_job():
    return {"id": new_job()}, 201


@app.get("/jobs/<job_id>/events")
@sse_route()
def job_events(job_id):
    # "0": from the start of the channel's history, so a page opened (or
    # reloaded) mid-job gets the bar where it is.
    return sse.subscribe(f"job:{job_id}", last_event_id=last_event_id() or "0")


# [/job]


# [htmx]
JOB = """<div hx-ext="sse" sse-connect="/jobs/{{ id }}/fragments" sse-close="done">
  <div sse-swap="progress">Starting...</div>
  <div sse-swap="done"></div>
</div>"""
BAR = '<progress max="100" value="{{ percent }}"></progress> {{ percent }} %'


@app.post("/jobs/html")
def start_job_html():
    return render_template_string(JOB, id=new_job())


@app.get("/jobs/<job_id>/fragments")
@sse_route()
def job_fragments(job_id):
    # The job's events, as the HTML that htmx swaps in.
    for event in sse.subscribe(f"job:{job_id}", last_event_id=last_event_id() or "0"):
        if event.event == "progress":
            html = render_template_string(BAR, **json.loads(event.data))
        elif event.event == "done":
            html = "Done."
        else:
            continue  # evstream-gap: the bar is right at the next event anyway
        yield Event(html, event=event.event, id=event.id)


# [/htmx]


@app.get("/")
def page():
    return Path(__file__).with_name("progress.html").read_text()


@app.get("/htmx")
def htmx_page():
    return Path(__file__).with_name("htmx.html").read_text()
