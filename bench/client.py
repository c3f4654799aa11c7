"""The load client: raw non-blocking sockets on one ``selectors`` loop.

Run by ``bench/run.py`` as its own process (pinned to another core than the
server); prints one JSON object on stdout. Modes:

``idle``
    Open connections to ``/idle`` at a bounded rate, level after level
    (``--levels 1000,5000,10000``: the connections of a level stay open while
    the next level is added). At each level, once every connection got its
    headers and a first body byte (or ``--open-timeout`` passed), wait
    ``--settle`` seconds and read the server's VmRSS; after the last level,
    hold everything ``--hold`` seconds and check that each connection is
    still open and received a heartbeat.
``stream``
    Open ``--conns`` connections to one finite stream at once and read them
    to the end (or ``--cap`` seconds); count events (occurrences of
    ``data:``, the body holds nothing else that contains it) and report
    events per second, the client's own CPU use and the server's.
``paced``
    Read one stream of events that carry their send time; report each
    event's arrival time and lateness.
``fanout``
    Broadcast latency (scenario D): hold ``--levels`` subscribers of
    ``--path`` (level after level, like ``idle``), read the server's VmRSS,
    then at each level publish ``--events`` events (``POST --pub-path?seq=N``),
    one at a time: the next goes ``--interval`` s after the previous one and
    at least ``--gap`` s after every subscriber got it (or ``--event-timeout``
    passed). Each event carries the server's ``time.time()`` taken just
    before its publish call; the client stamps ``time.time()`` on every read
    and matches events to reads afterwards, so the loop does nothing but
    ``recv`` while a fan-out is under way.

HTTP parsing is minimal on purpose: the status line, the end of the header
block, and the body bytes as they come (chunked framing included: it never
contains ``data:`` nor splits an event, every server here writes whole
events per chunk).
"""

from __future__ import annotations

import argparse
import bisect
import errno
import json
import os
import re
import resource
import select
import selectors
import socket
import sys
import time
import typing as t

PAT = b"data:"
CARRY = len(PAT) - 1
TS_RE = re.compile(rb'"t": ?([0-9]+\.[0-9]+)')

CONNECTING, HEADERS, BODY, CLOSED = 0, 1, 2, 3


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time of all threads of a process, in seconds (ns resolution).

    From ``/proc/PID/task/*/schedstat`` (time on CPU, in ns); falls back to
    ``/proc/PID/stat`` (utime + stime, in clock ticks).
    """
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Conn:
    __slots__ = (
        "sock",
        "state",
        "hbuf",
        "status",
        "t_start",
        "t_headers",
        "t_first",
        "t_last",
        "t_end",
        "body_bytes",
        "reads_after_first",
        "events",
        "tail",
        "pbuf",
        "arrivals",
        "error",
    )

    def __init__(self, sock: t.Any, now: float) -> None:
        self.sock = sock
        self.state = CONNECTING
        self.hbuf = b""
        self.status = 0
        self.t_start = now
        self.t_headers = 0.0
        self.t_first = 0.0
        self.t_last = 0.0
        self.t_end = 0.0
        self.body_bytes = 0
        self.reads_after_first = 0
        self.events = 0
        self.tail = b""
        self.pbuf = b""
        self.arrivals: list[tuple[float, float]] = []
        self.error = ""


class Client:
    """One selector loop driving many connections."""

    def __init__(self, port: int, path: str, *, recv_size: int, paced: bool = False) -> None:
        self.addr = ("127.0.0.1", port)
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.recv_size = recv_size
        self.paced = paced
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.connect_errors: dict[str, int] = {}
        #: connections neither closed nor past their first body byte
        self.waiting = 0
        #: body bytes read so far, all connections
        self.rx = 0

    # -- connections -------------------------------------------------------
    def open(self) -> Conn | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.monotonic()
        rc = sock.connect_ex(self.addr)
        if rc not in (0, errno.EINPROGRESS):
            name = errno.errorcode.get(rc, str(rc))
            self.connect_errors[name] = self.connect_errors.get(name, 0) + 1
            sock.close()
            return None
        conn = Conn(sock, now)
        self.conns.append(conn)
        self.waiting += 1
        self.sel.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    def _fail(self, conn: Conn, error: str) -> None:
        conn.error = conn.error or error
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        conn.t_end = time.monotonic()
        if not conn.t_first:
            self.waiting -= 1
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def close_all(self) -> None:
        for conn in self.conns:
            self._close(conn)
        self.sel.close()

    def live(self) -> int:
        return sum(1 for c in self.conns if c.state != CLOSED)

    # -- the loop ----------------------------------------------------------
    def poll(self, timeout: float) -> None:
        for key, _mask in self.sel.select(max(timeout, 0.0)):
            conn: Conn = key.data
            if conn.state == CONNECTING:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(conn, errno.errorcode.get(err, str(err)))
                    continue
                try:
                    conn.sock.send(self.request)  # small: always fits
                except OSError as e:
                    self._fail(conn, f"send: {e}")
                    continue
                conn.state = HEADERS
                self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            self._read(conn)

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(self.recv_size)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(conn, f"recv: {e}")
            return
        now = time.monotonic()
        if not data:
            if conn.state == HEADERS:
                conn.error = "closed before headers"
            self._close(conn)
            return
        if conn.state == HEADERS:
            conn.hbuf += data
            end = conn.hbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.hbuf) > 65536:
                    self._fail(conn, "header block too long")
                return
            head = conn.hbuf[:end]
            data = conn.hbuf[end + 4 :]
            conn.hbuf = b""
            try:
                conn.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self._fail(conn, "bad status line")
                return
            conn.t_headers = now
            conn.state = BODY
            if conn.status != 200:
                self._fail(conn, f"status {conn.status}")
                return
            if not data:
                return
        # body bytes
        if conn.t_first:
            conn.reads_after_first += 1
        else:
            conn.t_first = now
            self.waiting -= 1
        conn.t_last = now
        conn.body_bytes += len(data)
        self.rx += len(data)
        conn.events += data.count(PAT) + (conn.tail + data[:CARRY]).count(PAT)
        conn.tail = data[-CARRY:] if len(data) >= CARRY else (conn.tail + data)[-CARRY:]
        if self.paced:
            wall = time.time()
            buf = conn.pbuf + data
            cut = buf.rfind(b"\n\n")
            if cut >= 0:
                for m in TS_RE.finditer(buf, 0, cut):
                    conn.arrivals.append((float(m.group(1)), wall))
                buf = buf[cut + 2 :]
            conn.pbuf = buf


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# -- modes --------------------------------------------------------------------


def run_idle(a: argparse.Namespace) -> dict[str, t.Any]:
    levels = [int(x) for x in a.levels.split(",") if x]
    client = Client(a.port, a.path, recv_size=4096)
    out: dict[str, t.Any] = {"mode": "idle", "levels": []}

    # Warm-up: one stream, kept open (not counted), so the route's code is
    # loaded and run once before the baseline is taken.
    warm = client.open()
    deadline = time.monotonic() + 10
    while warm is not None and not warm.t_first and warm.state != CLOSED:
        if time.monotonic() > deadline:
            break
        client.poll(0.05)
    if warm is None or not warm.t_first:
        out["error"] = "warm-up stream got no first byte"
        return out
    t_settle = time.monotonic() + a.settle
    while time.monotonic() < t_settle:
        client.poll(0.05)
    out["rss_before_kib"] = rss0 = vm_rss_kib(a.rss_pid)
    counted: list[Conn] = []
    t_begin = time.monotonic()
    for target in levels:
        t_level = time.monotonic()
        opened_at_start = len(counted)
        to_open = target - opened_at_start
        # Open at a bounded rate, also bounding connections still waiting
        # for their first byte, while serving the ones already open.
        while len(counted) < target:
            now = time.monotonic()
            due = opened_at_start + int((now - t_level) * a.rate) + 1
            burst = min(due, target) - len(counted)
            burst = min(burst, a.max_pending - client.waiting)
            for _ in range(max(burst, 0)):
                conn = client.open()
                if conn is None:  # counted as a failed connection of this level
                    conn = Conn(None, now)
                    conn.state = CLOSED
                    conn.error = "connect failed"
                counted.append(conn)
            client.poll(0.002)
        t_opened = time.monotonic()
        deadline = t_opened + a.open_timeout
        while client.waiting > 0 and time.monotonic() < deadline:
            client.poll(0.05)
        t_all_first = time.monotonic()
        t_settle = t_all_first + a.settle
        while time.monotonic() < t_settle:
            client.poll(0.05)
        rss = vm_rss_kib(a.rss_pid)
        held = sum(1 for c in counted if c.t_first and c.state != CLOSED)
        ttfb = [c.t_first - c.t_start for c in counted[opened_at_start:] if c.t_first]
        errors: dict[str, int] = {}
        for c in counted:
            if c.error:
                errors[c.error] = errors.get(c.error, 0) + 1
        level = {
            "n": target,
            "held": held,
            "rss_kib": rss,
            "kib_per_stream": (rss - rss0) / target if rss and rss0 else None,
            "open_seconds": t_opened - t_level,
            "open_rate": to_open / max(t_opened - t_level, 1e-9),
            "all_first_byte_seconds": t_all_first - t_level,
            "ttfb_ms_p50": (percentile(ttfb, 0.5) or 0) * 1000,
            "ttfb_ms_p99": (percentile(ttfb, 0.99) or 0) * 1000,
            "ttfb_ms_max": max(ttfb, default=0) * 1000,
            "errors": errors,
        }
        out["levels"].append(level)
        print(json.dumps({"progress": level}), file=sys.stderr, flush=True)
    # Hold everything one heartbeat interval and more: every stream must stay
    # open and receive a heartbeat.
    t_hold = time.monotonic()
    hold_until = t_hold + a.hold
    while time.monotonic() < hold_until:
        client.poll(0.1)
    rss = vm_rss_kib(a.rss_pid)
    n = len(counted)
    open_now = [c for c in counted if c.t_first and c.state != CLOSED]
    beat = [
        c for c in open_now if c.reads_after_first > 0 and c.t_last - c.t_first >= a.heartbeat * 0.5
    ]
    errors = {}
    for c in counted:
        if c.error:
            errors[c.error] = errors.get(c.error, 0) + 1
    out["hold"] = {
        "n": n,
        "seconds": a.hold,
        "held": len(open_now),
        "heartbeat_seen": len(beat),
        "rss_kib": rss,
        "kib_per_stream": (rss - rss0) / n if rss and rss0 and n else None,
        "errors": errors,
    }
    out["connect_errors"] = client.connect_errors
    out["total_seconds"] = time.monotonic() - t_begin
    client.close_all()
    return out


def run_stream(a: argparse.Namespace) -> dict[str, t.Any]:
    client = Client(a.port, a.path, recv_size=a.recv_size)
    cpu0 = self_cpu_seconds()
    scpu0 = proc_cpu_seconds(a.cpu_pid) if a.cpu_pid else None
    t0 = time.monotonic()
    for _ in range(a.conns):
        client.open()
    deadline = t0 + a.cap
    polls = sleeps = 0
    while client.live() and time.monotonic() < deadline:
        rx = client.rx
        client.poll(min(0.5, max(deadline - time.monotonic(), 0)))
        polls += 1
        if a.batch_sleep and client.rx - rx < a.batch_bytes:
            # Little was pending: let the kernel buffer more before the next
            # read, so that the client reads in large gulps and stays far
            # from being the bottleneck (the socket buffers absorb it).
            time.sleep(a.batch_sleep)
            sleeps += 1
    t1 = time.monotonic()
    capped = client.live() > 0
    cpu1 = self_cpu_seconds()
    scpu1 = proc_cpu_seconds(a.cpu_pid) if a.cpu_pid else None
    client.close_all()
    conns = client.conns
    events = sum(c.events for c in conns)
    ends = [c.t_end for c in conns if c.t_end and not capped] or [t1]
    elapsed = max(ends) - t0
    first = [c.t_first - c.t_start for c in conns if c.t_first]
    errors: dict[str, int] = {}
    for c in conns:
        if c.error:
            errors[c.error] = errors.get(c.error, 0) + 1
    return {
        "mode": "stream",
        "conns": a.conns,
        "expect_per_conn": a.expect,
        "events": events,
        "bytes": sum(c.body_bytes for c in conns),
        "complete": sum(1 for c in conns if c.events == a.expect and not c.error),
        "capped": capped,
        "elapsed": elapsed,
        "events_per_s": events / elapsed if elapsed > 0 else None,
        "client_cpu_share": (cpu1 - cpu0) / (t1 - t0),
        "server_cpu_s": (scpu1 - scpu0) if scpu0 is not None and scpu1 is not None else None,
        "server_cpu_share": (scpu1 - scpu0) / (t1 - t0)
        if scpu0 is not None and scpu1 is not None
        else None,
        "reads": sum(c.reads_after_first + (1 if c.t_first else 0) for c in conns),
        "polls": polls,
        "batch_sleeps": sleeps,
        "ttfb_ms_max": max(first, default=0) * 1000,
        "stream_seconds_min": min((c.t_end - c.t_start for c in conns if c.t_end), default=None),
        "stream_seconds_max": max((c.t_end - c.t_start for c in conns if c.t_end), default=None),
        "errors": errors,
        "connect_errors": client.connect_errors,
    }


def run_paced(a: argparse.Namespace) -> dict[str, t.Any]:
    client = Client(a.port, a.path, recv_size=65536, paced=True)
    t0 = time.monotonic()
    for _ in range(a.conns):
        client.open()
    deadline = t0 + a.cap
    while client.live() and time.monotonic() < deadline:
        client.poll(min(0.5, max(deadline - time.monotonic(), 0)))
    client.close_all()
    streams = []
    for c in client.conns:
        streams.append(
            {
                "sent": [s for s, _ in c.arrivals],
                "arrived": [r for _, r in c.arrivals],
                "error": c.error,
            }
        )
    return {"mode": "paced", "expect_per_conn": a.expect, "streams": streams}


# -- fanout (scenario D) ----------------------------------------------------------

EV_RE = re.compile(rb'"seq": ?([0-9]+), ?"t": ?([0-9]+\.[0-9]+)')


class Sub:
    """One subscriber connection of the fanout mode."""

    __slots__ = ("sock", "fd", "state", "hbuf", "t_start", "t_first", "chunks", "error")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = CONNECTING
        self.hbuf = b""
        self.t_start = now
        self.t_first = 0.0
        #: (time.time() right after the recv, bytes) of every body read
        self.chunks: list[tuple[float, bytes]] = []
        self.error = ""


class Fanout:
    """A bare epoll loop over many subscribers and one publish request at a time.

    The hot path (a body read) is a ``recv``, a ``time.time()``, an append
    and one substring test (to know when every subscriber got the current
    event); events are parsed after the run.
    """

    def __init__(self, port: int, path: str, pub_path: str) -> None:
        self.port = port
        self.addr = ("127.0.0.1", port)
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.pub_path = pub_path
        self.ep = select.epoll()
        self.subs: dict[int, Sub] = {}
        self.all: list[Sub] = []
        self.waiting = 0  # connections without a first body byte yet
        self.connect_errors: dict[str, int] = {}
        #: the marker of the event being fanned out, and how many reads held it
        self.marker = b"\0"
        self.got = 0
        # the publish request under way
        self.pub_sock: socket.socket | None = None
        self.pub_buf = b""
        self.pub_replies: list[bytes] = []

    def open(self) -> Sub | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.time()
        rc = sock.connect_ex(self.addr)
        if rc not in (0, errno.EINPROGRESS):
            name = errno.errorcode.get(rc, str(rc))
            self.connect_errors[name] = self.connect_errors.get(name, 0) + 1
            sock.close()
            return None
        sub = Sub(sock, now)
        self.subs[sub.fd] = sub
        self.all.append(sub)
        self.waiting += 1
        self.ep.register(sub.fd, select.EPOLLOUT)
        return sub

    def _close(self, sub: Sub, error: str = "") -> None:
        if sub.state == CLOSED:
            return
        if not sub.t_first:
            self.waiting -= 1
        sub.error = sub.error or error
        sub.state = CLOSED
        self.subs.pop(sub.fd, None)
        try:
            self.ep.unregister(sub.fd)
        except (OSError, ValueError):
            pass
        sub.sock.close()

    def publish(self, seq: int) -> float:
        """Send ``POST pub_path?seq=N`` on a new connection; return the
        client's time.time() just before the send."""
        self.marker = b'"seq":%d,' % seq
        self.got = 0
        sock = socket.create_connection(self.addr, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = (
            f"POST {self.pub_path}?seq={seq} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode()
        sent = time.time()
        sock.sendall(req)
        sock.setblocking(False)
        self.pub_sock = sock
        self.pub_buf = b""
        self.ep.register(sock.fileno(), select.EPOLLIN)
        return sent

    def _pub_read(self) -> None:
        sock = self.pub_sock
        assert sock is not None
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.pub_buf += data
            return
        self.ep.unregister(sock.fileno())
        sock.close()
        self.pub_sock = None
        self.pub_replies.append(self.pub_buf)

    def poll(self, timeout: float) -> None:
        now_fn = time.time
        subs = self.subs
        for fd, _ev in self.ep.poll(max(timeout, 0.0)):
            sub = subs.get(fd)
            if sub is None:
                if self.pub_sock is not None and fd == self.pub_sock.fileno():
                    self._pub_read()
                continue
            if sub.state == BODY:
                try:
                    data = sub.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self._close(sub, f"recv: {e}")
                    continue
                now = now_fn()
                if not data:
                    self._close(sub, "closed by the server")
                    continue
                sub.chunks.append((now, data))
                if self.marker in data:
                    self.got += 1
                elif not sub.t_first:  # the headers came alone: first body byte
                    sub.t_first = now
                    self.waiting -= 1
                continue
            self._slow(sub)

    def _slow(self, sub: Sub) -> None:
        if sub.state == CONNECTING:
            err = sub.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._close(sub, errno.errorcode.get(err, str(err)))
                return
            try:
                sub.sock.send(self.request)
            except OSError as e:
                self._close(sub, f"send: {e}")
                return
            sub.state = HEADERS
            self.ep.modify(sub.fd, select.EPOLLIN)
            return
        try:
            data = sub.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._close(sub, f"recv: {e}")
            return
        now = time.time()
        if not data:
            self._close(sub, "closed before headers")
            return
        sub.hbuf += data
        end = sub.hbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(sub.hbuf) > 65536:
                self._close(sub, "header block too long")
            return
        head, body = sub.hbuf[:end], sub.hbuf[end + 4 :]
        sub.hbuf = b""
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self._close(sub, "bad status line")
            return
        if status != 200:
            self._close(sub, f"status {status}")
            return
        sub.state = BODY
        if body:  # else the first body byte comes with the next read
            sub.t_first = now
            self.waiting -= 1
            sub.chunks.append((now, body))

    def close_all(self) -> None:
        for sub in self.all:
            self._close(sub)
        if self.pub_sock is not None:
            self.pub_sock.close()
        self.ep.close()


def _arrivals(sub: Sub) -> list[tuple[int, float, float]]:
    """(seq, publish time, arrival time) of every event a subscriber read.

    An event's arrival is the time of the read that brought its last byte.
    """
    if not sub.chunks:
        return []
    body = b"".join(data for _, data in sub.chunks)
    ends = []
    total = 0
    for _, data in sub.chunks:
        total += len(data)
        ends.append(total)
    out = []
    for m in EV_RE.finditer(body):
        i = bisect.bisect_left(ends, m.end())
        out.append((int(m.group(1)), float(m.group(2)), sub.chunks[min(i, len(ends) - 1)][0]))
    return out


def _json_reply(raw: bytes) -> dict[str, t.Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        try:
            body = rest[: int(size, 16)]
        except ValueError:
            return {}
    try:
        return t.cast(dict[str, t.Any], json.loads(body))
    except ValueError:
        return {}


def run_fanout(a: argparse.Namespace) -> dict[str, t.Any]:
    levels = [int(x) for x in a.levels.split(",") if x]
    fan = Fanout(a.port, a.path, a.pub_path)
    out: dict[str, t.Any] = {"mode": "fanout", "levels": []}

    def wait_first(deadline: float) -> None:
        while fan.waiting > 0 and time.time() < deadline:
            fan.poll(0.05)

    def idle(seconds: float) -> None:
        until = time.time() + seconds
        while True:
            left = until - time.time()
            if left <= 0:
                return
            fan.poll(min(left, 0.05))

    def publish_one(seq: int, expect: int) -> dict[str, t.Any]:
        sent = fan.publish(seq)
        deadline = sent + a.event_timeout
        while (fan.got < expect or fan.pub_sock is not None) and time.time() < deadline:
            fan.poll(min(0.05, max(deadline - time.time(), 0)))
        done = time.time()
        reply = _json_reply(fan.pub_replies[-1]) if fan.pub_sock is None and fan.pub_replies else {}
        return {
            "seq": seq,
            "client_sent": sent,
            "all_read": done if fan.got >= expect else None,
            "reads_with_it": fan.got,
            "expected": expect,
            "server_fanout_s": reply.get("fanout_s"),
        }

    # Warm-up: one subscriber (kept, not counted) and one event, so that the
    # routes, the publish path (and a broker's reader, script, connections)
    # ran once before the baseline memory is read.
    warm = fan.open()
    wait_first(time.time() + 10)
    if warm is None or not warm.t_first:
        out["error"] = "warm-up subscriber got no first byte"
        fan.close_all()
        return out
    warm_ev = publish_one(0, 1)
    if warm_ev["all_read"] is None:
        out["error"] = f"warm-up event not received: {warm_ev}"
        fan.close_all()
        return out
    idle(a.settle)
    out["rss_before_kib"] = rss0 = vm_rss_kib(a.rss_pid)
    counted: list[Sub] = []
    seq = 0
    for target in levels:
        t_level = time.time()
        start = len(counted)
        while len(counted) < target:
            due = start + int((time.time() - t_level) * a.rate) + 1
            burst = min(min(due, target) - len(counted), a.max_pending - fan.waiting)
            for _ in range(max(burst, 0)):
                sub = fan.open()
                if sub is None:
                    break
                counted.append(sub)
            fan.poll(0.002)
        open_s = time.time() - t_level
        wait_first(time.time() + a.open_timeout)
        idle(a.settle)
        rss = vm_rss_kib(a.rss_pid)
        held = sum(1 for s in counted if s.t_first and s.state != CLOSED)
        # Publish this level's events, one fan-out at a time.
        cpu0, scpu0 = self_cpu_seconds(), proc_cpu_seconds(a.cpu_pid)
        t0 = time.time()
        events = []
        last_pub = 0.0
        for _ in range(a.events):
            seq += 1
            expect = sum(1 for s in counted if s.state != CLOSED) + (warm.state != CLOSED)
            ready = last_pub + a.interval
            while time.time() < ready:
                fan.poll(max(min(ready - time.time(), 0.05), 0))
            ev = publish_one(seq, expect)
            last_pub = ev["client_sent"]
            events.append(ev)
            if ev["all_read"] is not None:
                pause = ev["all_read"] + a.gap
                while time.time() < pause:
                    fan.poll(max(min(pause - time.time(), 0.05), 0))
        idle(0.2)  # stragglers of the last event
        t1 = time.time()
        cpu1, scpu1 = self_cpu_seconds(), proc_cpu_seconds(a.cpu_pid)
        out["levels"].append(
            {
                "n": target,
                "held": held,
                "open_seconds": open_s,
                "rss_kib": rss,
                "kib_per_sub": (rss - rss0) / target if rss and rss0 else None,
                "rss_after_events_kib": vm_rss_kib(a.rss_pid),
                "first_seq": events[0]["seq"] if events else None,
                "events": events,
                "phase_seconds": t1 - t0,
                "server_cpu_s": (scpu1 - scpu0)
                if scpu0 is not None and scpu1 is not None
                else None,
                "client_cpu_share": (cpu1 - cpu0) / (t1 - t0),
            }
        )
        print(
            json.dumps({"progress_fanout": {"n": target, "held": held, "rss_kib": rss}}),
            file=sys.stderr,
            flush=True,
        )
    fan.close_all()
    # Match events to reads, per level: every (event, subscriber) pair.
    by_sub = [_arrivals(s) for s in counted]
    for level in out["levels"]:
        n = level["n"]
        first, last = level["first_seq"], level["first_seq"] + len(level["events"]) - 1
        lat: list[float] = []
        per_event: dict[int, list[float]] = {ev["seq"]: [] for ev in level["events"]}
        for arrivals in by_sub[:n]:
            for s, sent, arrived in arrivals:
                if first <= s <= last:
                    ms = (arrived - sent) * 1000
                    lat.append(ms)
                    per_event[s].append(ms)
        lasts = []
        for ev in level["events"]:
            got = per_event[ev["seq"]]
            ev["subscribers"] = len(got)
            ev["first_ms"] = min(got, default=None)
            ev["p50_ms"] = percentile(got, 0.5)
            ev["last_ms"] = max(got, default=None)
            if len(got) == n:
                lasts.append(ev["last_ms"])
        sc = level["server_cpu_s"]
        level.update(
            {
                "pairs": len(lat),
                "expected_pairs": n * len(level["events"]),
                "p50_ms": percentile(lat, 0.5),
                "p99_ms": percentile(lat, 0.99),
                "max_ms": max(lat, default=None),
                "last_ms_median": percentile(lasts, 0.5),
                "last_ms_max": max(lasts, default=None),
                "events_complete": len(lasts),
                "server_us_per_delivery": sc / len(lat) * 1e6 if sc and lat else None,
            }
        )
        errors: dict[str, int] = {}
        for sub in counted[:n]:
            if sub.error:
                errors[sub.error] = errors.get(sub.error, 0) + 1
        level["errors"] = errors
    out["connect_errors"] = fan.connect_errors
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["idle", "stream", "paced", "fanout"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--expect", type=int, default=0, help="events each stream should carry")
    p.add_argument("--cap", type=float, default=60.0, help="stop reading after this many s")
    p.add_argument("--recv-size", type=int, default=262144)
    p.add_argument(
        "--batch-sleep",
        type=float,
        default=0.0005,
        help="stream mode: sleep this long after a poll that read less than --batch-bytes",
    )
    p.add_argument("--batch-bytes", type=int, default=65536)
    p.add_argument("--cpu-pid", type=int, default=0, help="server pid to read CPU time of")
    p.add_argument("--rss-pid", type=int, default=0, help="server pid to read VmRSS of")
    p.add_argument("--levels", default="1000")
    p.add_argument("--rate", type=float, default=2000.0, help="connections opened per second")
    p.add_argument("--max-pending", type=int, default=1000)
    p.add_argument("--open-timeout", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--hold", type=float, default=7.0)
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--pub-path", default="/publish", help="fanout: the publish endpoint")
    p.add_argument("--events", type=int, default=20, help="fanout: events per level")
    p.add_argument("--interval", type=float, default=0.2, help="fanout: s between publishes")
    p.add_argument(
        "--gap", type=float, default=0.02, help="fanout: s after a fan-out ends before the next"
    )
    p.add_argument("--event-timeout", type=float, default=5.0, help="fanout: s per event at most")
    a = p.parse_args(argv)
    raise_nofile()
    if a.mode == "idle":
        out = run_idle(a)
    elif a.mode == "stream":
        out = run_stream(a)
    elif a.mode == "fanout":
        out = run_fanout(a)
    else:
        out = run_paced(a)
    out["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
