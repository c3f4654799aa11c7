"""What a stream body's write costs with metrics off and on, in one process.

Usage (from the repository root)::

    .venv/bin/python bench/metrics_cost.py

A stream body (:class:`flask_evstream.response.EventStream`, or the
:class:`flask_evstream.metrics.MeteredStream` that ``EVSTREAM_METRICS``
makes) is iterated over a source that returns the same chunk at once: one
token event (a paced stream, a broadcast) or 368 of them (64 KiB, what a
fast generator's writes carry under gevent). No socket: the figure is the
body's own CPU per write, the best of 7 rounds of 100,000. Metrics on is
measured in one process (prometheus_client's default values) and in
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: each value in a file),
each mode in a process of its own, as the mode is chosen at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 100_000


def measure(mode: str, per_write: int) -> float:
    """Seconds per write of a body with ``per_write`` events per chunk."""
    from flask import Flask

    from bench.apps.common import CHUNK_JSON
    from flask_evstream import EvStream
    from flask_evstream.event import encode_data
    from flask_evstream.response import EventStream

    app = Flask("cost")
    app.config["EVSTREAM_METRICS"] = mode != "off"
    EvStream(app)
    chunk = encode_data(CHUNK_JSON) * per_write

    class Source:
        error = None
        abort = None
        taken = per_write

        def take(self, timeout: float | None) -> bytes:
            return chunk

        def end(self) -> None:
            pass

        def close(self) -> None:
            pass

    with app.test_request_context("/"):
        options = dict(app=app, retry=None, heartbeat=None, keep_context=False)
        metrics = app.extensions["evstream"].metrics
        body = (
            EventStream(Source(), **options)
            if metrics is None
            else metrics.stream(Source(), **options)
        )
        next(body)  # the opening
        best = min(timeit.repeat(body.__next__, number=ROUNDS, repeat=7)) / ROUNDS
        body.close()
    return best


def main() -> None:
    if len(sys.argv) == 3:  # a child: one mode, one chunk size
        print(measure(sys.argv[1], int(sys.argv[2])))
        return
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    print("| events per write | off | on, one process | on, multiprocess mode |")
    print("|---:|---:|---:|---:|")
    for per_write in (1, 368):
        cells = []
        for mode in ("off", "on", "on-multiprocess"):
            with tempfile.TemporaryDirectory() as directory:
                child_env = dict(env)
                if mode == "on-multiprocess":
                    child_env["PROMETHEUS_MULTIPROC_DIR"] = directory
                out = subprocess.run(
                    [sys.executable, __file__, mode, str(per_write)],
                    env=child_env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            cells.append(f"{float(out) * 1e9:,.0f} ns")
        print(f"| {per_write} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
