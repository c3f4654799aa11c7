"""The resumable soak client: concurrent answers whose readers drop and
resume at random, over loopback, bounded in time. Run by
tests/test_resumable_soak.py:

    python resumable_soak.py SECONDS LANES URL [URL ...]

Each of LANES lanes POSTs an answer (``/chat``, 40 to 160 tokens, 20 to 60
ms apart) to a random server and reads it; at random (mean every 1.5 s) it
drops the connection and resumes by GET on the Content-Location of a random
server with its Last-Event-ID, until the answer ends (a resume after the
last event answers 204); then it starts another, until SECONDS have passed.
Prints one JSON line: the answers, the ones whose text was not exactly the
generated one, drops and resumes, and the seconds from connecting to the
response head (median, 99th percentile and most) of the POSTs and the GETs.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

seconds, lanes = float(sys.argv[1]), int(sys.argv[2])
servers = [(u.split("//")[1].split(":")[0], int(u.rsplit(":", 1)[1])) for u in sys.argv[3:]]
for host, _ in servers:
    assert host.startswith("127."), "loopback only"
random.seed(4321)
stats = {"answers": 0, "bad": [], "drops": 0, "resumes": 0, "errors": []}
#: Seconds from connecting to the response head, by method.
heads = {"POST": [], "GET": []}
#: How long a connect or a response head may take: a guard against a hang,
#: not a latency bound (the latencies are reported). Alone on 2 cores the
#: soak's slowest head took under 5 s, with tox loading the machine up to
#: 17 s, and once, with two soaks at once under ``tox -p 2``, over 30 s.
HEAD_TIMEOUT = 120


def request(method, path, body=None, headers=None):
    host, port = random.choice(servers)
    where = f"{method} to :{port}"  # for the report of a failure
    began = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=HEAD_TIMEOUT)
    except OSError as e:
        raise OSError(f"{where}, connecting: {e!r}") from e
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.0", f"Host: {host}:{port}", "Accept: text/event-stream"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        try:
            chunk = sock.recv(65536)
        except OSError as e:
            sock.close()
            raise OSError(f"{where}, waiting for the response head: {e!r}") from e
        if not chunk:
            raise EOFError(f"{where}: no response head")
        buffer += chunk
    heads[method].append(time.monotonic() - began)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), found, sock, buffer


def read(sock, buffer, got, state, drop_at):
    """Read events into ``got`` until the end, or until ``drop_at``: True
    when the response ended by itself."""
    while True:
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = {}
            for line in block.decode().split("\n"):
                if line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value
            if "id" in fields:
                state["last"] = fields["id"]
            if fields.get("event") == "evstream-end":
                state["ending"] = fields.get("data")
            elif "data" in fields:
                got.append(fields["data"])
        if time.monotonic() >= drop_at:
            sock.close()
            return False
        sock.settimeout(max(0.01, drop_at - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            sock.close()
            return True
        buffer += chunk


def lane(index, until):
    k = 0
    while time.monotonic() < until:
        k += 1
        n = random.randint(40, 160)
        prompt = f"l{index}a{k}"
        body = {"prompt": prompt, "n": n, "delay": random.uniform(0.02, 0.06)}
        got, state = [], {"last": None, "ending": None}
        started = time.monotonic()
        location = None
        try:
            status, headers, sock, buffer = request("POST", "/chat", body)
            assert status == 200, status
            location = headers["content-location"]
            stats["answers"] += 1
            while True:
                drop_at = time.monotonic() + random.expovariate(1 / 1.5)
                if read(sock, buffer, got, state, drop_at) is False:
                    stats["drops"] += 1
                if state["ending"] is not None:
                    break
                stats["resumes"] += 1
                status, _, sock, buffer = request(
                    "GET",
                    location,
                    headers={"Last-Event-ID": state["last"]} if state["last"] else None,
                )
                if status == 204:
                    sock.close()
                    break
                assert status == 200, status
        except Exception as e:  # reported, and fails the test
            stats["errors"].append(
                f"{prompt}: {e!r} after {time.monotonic() - started:.1f} s, {len(got)} of {n}"
                f" events, at {location} from {state['last']}"
            )
            continue
        if got != [f"{prompt} {i}" for i in range(n)] or state["ending"] is not None:
            stats["bad"].append(
                {"prompt": prompt, "n": n, "got": len(got), "ending": state["ending"]}
            )


until = time.monotonic() + seconds
gevent.joinall(
    [gevent.spawn(lane, i, until) for i in range(lanes)], timeout=seconds + 2 * HEAD_TIMEOUT
)


def spread(values):
    values = sorted(values)
    if not values:
        return None
    at = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 4)  # noqa: E731
    return {"n": len(values), "p50": at(0.5), "p99": at(0.99), "max": round(values[-1], 4)}


stats["head_seconds"] = {method: spread(values) for method, values in heads.items()}
print(json.dumps(stats))
