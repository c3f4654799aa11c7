"""Ending the processes the tests start (gunicorn, redis-server, proxies)."""

from __future__ import annotations

import os
import signal
import subprocess
import typing as t


def end(proc: subprocess.Popen[t.Any], timeout: float, *, group: bool = False) -> None:
    """SIGTERM ``proc`` (its whole process group with ``group``), wait up to
    ``timeout`` seconds for it to exit, then SIGKILL it. A process that has
    already exited is left alone."""
    if proc.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()
