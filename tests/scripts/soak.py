"""The broadcast soak client: subscribers that reconnect at random with
their Last-Event-ID while publishers publish, all over loopback, bounded in
time. Run by tests/test_soak.py:

    python soak.py PHASE SECONDS SUBSCRIBERS CHANNELS PUBLISHERS URL [URL ...]

PHASE ``warmup`` connects every subscriber once and leaves; ``soak`` runs
the publishers for SECONDS while subscribers reconnect (mean every 10 s) to
a random server, then reads until each has the last id of its channel (at
most 60 s more). Prints one JSON line: per channel the published ids, per
subscriber the ids received, its gap events and reconnects.
"""

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

phase, seconds, n_subs, n_channels, n_pubs = (
    sys.argv[1],
    float(sys.argv[2]),
    *map(int, sys.argv[3:6]),
)
urls = sys.argv[6:]
servers = [(u.split("//")[1].split(":")[0], int(u.rsplit(":", 1)[1])) for u in urls]
for host, _ in servers:
    assert host.startswith("127."), "loopback only"
channels = [f"soak{i}" for i in range(n_channels)]
random.seed(1234)


def open_stream(channel, last):
    host, port = random.choice(servers)
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(
        (
            f"GET /sub?c={channel} HTTP/1.0\r\nHost: {host}:{port}\r\n"
            f"Accept: text/event-stream\r\nLast-Event-ID: {last}\r\n\r\n"
        ).encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise EOFError("closed before the headers")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return sock, status, rest


class Subscriber:
    def __init__(self, index):
        self.channel = channels[index % n_channels]
        self.ids = []
        self.gaps = 0
        self.reconnects = 0
        self.statuses = []
        self.target = None  # the last id to wait for, once publishing is over

    def done(self):
        if self.target is None:
            return False
        return self.target == 0 or bool(self.ids and self.ids[-1] >= self.target)

    def run(self, until, final_deadline):
        last = "0"
        while time.monotonic() < final_deadline and not self.done():
            try:
                sock, status, buffer = open_stream(self.channel, last)
            except OSError:
                gevent.sleep(0.2)
                continue
            self.statuses.append(status)
            if status != 200:
                sock.close()
                gevent.sleep(0.5)
                continue
            leave_at = time.monotonic() + random.expovariate(1 / 10)
            try:
                while not self.done() and time.monotonic() < final_deadline:
                    if phase == "warmup" and self.reconnects == 0 and not buffer:
                        break
                    if time.monotonic() >= leave_at and time.monotonic() < until:
                        break  # reconnect at random, while publishing goes on
                    while b"\n\n" in buffer:
                        block, buffer = buffer.split(b"\n\n", 1)
                        fields = dict(
                            line.split(": ", 1)
                            for line in block.decode().split("\n")
                            if line and not line.startswith(":") and ": " in line
                        )
                        if fields.get("event") == "evstream-gap":
                            self.gaps += 1
                        elif "id" in fields:
                            self.ids.append(int(fields["id"]))
                            last = fields["id"]
                    sock.settimeout(1.0)
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    buffer += data
            finally:
                sock.close()
            if phase == "warmup":
                return
            self.reconnects += 1


published = {c: [] for c in channels}
failures = []


def publisher(until):
    conns = {}
    n = 0
    while time.monotonic() < until:
        channel = random.choice(channels)
        server = random.choice(servers)
        conn = conns.get(server) or http.client.HTTPConnection(*server, timeout=30)
        conns[server] = conn
        body = json.dumps({"data": {"n": n}})
        try:
            conn.request("POST", f"/publish/{channel}", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            reply = response.read()
        except (OSError, http.client.HTTPException) as e:
            failures.append(repr(e))
            conns.pop(server).close()
            continue
        if response.status != 200:
            failures.append(reply.decode(errors="replace"))
        else:
            published[channel].append(int(json.loads(reply)["id"]))
        n += 1
        gevent.sleep(0.1)


subscribers = [Subscriber(i) for i in range(n_subs)]
start = time.monotonic()
lead = 2.0 if phase == "soak" else 0.0  # subscribers connect first (they replay from 0 anyway)
until = start + lead + (seconds if phase == "soak" else 0)
final_deadline = until + 60
jobs = [gevent.spawn(s.run, until, final_deadline) for s in subscribers]
if phase == "soak":
    gevent.sleep(lead)
    pubs = [gevent.spawn(publisher, until) for _ in range(n_pubs)]
    gevent.joinall(pubs)
    for s in subscribers:
        ids = published[s.channel]
        s.target = ids[-1] if ids else 0
gevent.joinall(jobs, timeout=final_deadline - time.monotonic() + 5)
print(
    json.dumps(
        {
            "published": published,
            "failures": failures[:20],
            "subscribers": [
                {
                    "channel": s.channel,
                    "ids": s.ids,
                    "gaps": s.gaps,
                    "reconnects": s.reconnects,
                    "statuses": sorted(set(s.statuses)),
                }
                for s in subscribers
            ],
            "seconds": time.monotonic() - start,
        }
    )
)
