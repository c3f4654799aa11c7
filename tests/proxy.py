"""A loopback TCP proxy for the tests that can cut every connection it
carries, as a network change would; new connections go to its backends in
turn (two servers: a resume may land on either)."""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading


class CuttingProxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self._backends = itertools.cycle(backends)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.connections = 0
        #: While set, new connections are reset at once (a network that is down).
        self.refusing = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            with self._lock:
                backend = next(self._backends)
                self.connections += 1
            try:
                upstream = socket.create_connection(backend, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            ended: list[int] = []  # the directions of this pair that ended
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b, ended), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, ended: list[int]) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._open.discard(s)
            # Both directions end here; the second one closes the sockets.
            with self._lock:
                ended.append(1)
                last = len(ended) == 2
            if last:
                source.close()
                sink.close()

    def cut(self) -> int:
        """Cut every open connection (both ends see it broken)."""
        with self._lock:
            sockets = list(self._open)
            self._open.clear()
        for s in sockets:
            with contextlib.suppress(OSError):
                # No lingering: what is unsent is dropped, as on a dead network.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the pipe blocked reading it
            with contextlib.suppress(OSError):
                s.close()
        return len(sockets) // 2

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
