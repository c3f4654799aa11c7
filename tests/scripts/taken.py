"""What the registration scripts share: reading a subscription's events by
id (lockstep on the id awaited, with a time limit)."""

import re
import time


def take_until(sub, until_id, timeout=5.0):
    """The bytes the subscription yields, until the event ``until_id`` or
    the timeout; and the ids in them."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and f"id: {until_id}\n".encode() not in got:
        chunk = sub.take(0.1)
        if chunk:
            got += chunk
    return got, [int(n) for n in re.findall(rb"^id: (\d+)$", got, re.M)]
