"""A raw HTTP/1.0 stream reader for the server tests: exact bytes, exact timing.

HTTP/1.0 makes the server send the body unframed (no chunked encoding) and
close at its end, so what the socket gives is the event stream itself.
"""

from __future__ import annotations

import socket
import time


class RawStream:
    def __init__(
        self,
        url: str,
        path: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
        *,
        wait: bool = True,
    ) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        lines = [f"GET {path} HTTP/1.0", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        self.closed_by_server = False
        self.status = 0
        self.headers: dict[str, str] = {}
        if wait:
            self.read_head()

    def read_head(self) -> None:
        """Read the status line and headers."""
        head = self.read_until(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _recv(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.closed_by_server = True
            return False
        self.buffer += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        """Return the bytes up to and including ``marker``."""
        while marker not in self.buffer:
            if not self._recv():
                raise EOFError(f"stream closed before {marker!r}; got {self.buffer!r}")
        end = self.buffer.index(marker) + len(marker)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    def read_event(self) -> tuple[bytes, float]:
        """Return the next block ending in a blank line, and when it arrived."""
        block = self.read_until(b"\n\n")
        return block, time.monotonic()

    def read_to_end(self) -> bytes:
        while self._recv():
            pass
        out, self.buffer = self.buffer, b""
        return out

    def close(self) -> None:
        self.sock.close()
