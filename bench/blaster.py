"""A stand-in server that sends events as fast as it can, to measure the client.

``GET /tokens?n=N&per_send=K`` answers with ``N`` copies of the benchmark's
token event in chunked encoding, ``K`` events per ``sendall`` (default 350,
about 64 KiB, which is what a coalescing server writes; ``per_send=1`` is
what the bare app writes). Plain threads and blocking sockets, no framework:
its only use is ``run.py``'s client-ceiling check (how many events per second
the load client can read), so that a server result close to that ceiling is
recognised as measuring the client, not the server.
"""

from __future__ import annotations

import argparse
import socket
import threading
from urllib.parse import parse_qs, urlsplit

from .apps.common import CHUNK_WIRE


def _chunk(payload: bytes) -> bytes:
    return b"%X\r\n" % len(payload) + payload + b"\r\n"


def handle(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        target = buf.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        if target.startswith("/health"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return
        query = parse_qs(urlsplit(target).query)
        n = int(query.get("n", ["100000"])[0])
        per_send = max(1, int(query.get("per_send", ["350"])[0]))
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        big = _chunk(CHUNK_WIRE * per_send)
        try:
            full, rest = divmod(n, per_send)
            for _ in range(full):
                conn.sendall(big)
            if rest:
                conn.sendall(_chunk(CHUNK_WIRE * rest))
            conn.sendall(b"0\r\n\r\n")
        except OSError:
            return


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    srv = socket.create_server(("127.0.0.1", a.port), backlog=1024)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
