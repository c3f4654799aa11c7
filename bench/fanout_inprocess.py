"""Fan-out cost without HTTP: 5,000 greenlets read one channel, 20 events are
published, and the CPU time per delivery and the garbage collections are
counted, for flask-evstream's memory broker (a Subscription read as a stream
reads it) and for bare gevent queues, side by side in one run.

    .venv/bin/python bench/fanout_inprocess.py [SUBSCRIBERS] [EVENTS] [REPS]

Each measurement runs in its own process (gevent-patched). Prints one line
per run and the median ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

CHILD = r"""
from gevent import monkey; monkey.patch_all()
import gc, sys, time, gevent
from gevent.queue import Queue, Empty
mode, n, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
got = [0]
if mode == "bare":
    subs = set()
    def reader():
        q = Queue(); subs.add(q)
        while True:
            try: q.get(timeout=15)
            except Empty: continue
            got[0] += 1
    def publish(i):
        wire = b'data: {"seq":%d}\n\n' % i
        for q in tuple(subs): q.put_nowait(wire)
else:
    from flask_evstream.brokers.memory import MemoryBroker
    from flask_evstream.channels import Subscription
    broker = MemoryBroker(history=100)
    def reader():
        s = Subscription(broker, ("c",), after=None, last_event_id=None, queue_size=1000)
        s.wait_started(0)
        while True:
            if s.take(15): got[0] += 1
    def publish(i):
        broker.publish("c", '{"seq":%d}' % i, event=None, id=None)
readers = [gevent.spawn(reader) for _ in range(n)]
gevent.sleep(0.5)
before = [s["collections"] for s in gc.get_stats()]
cpu = time.process_time()
for i in range(events):
    got[0] = 0
    publish(i)
    while got[0] < n: gevent.sleep(0)
cpu = time.process_time() - cpu
gcs = [s["collections"] - b for s, b in zip(gc.get_stats(), before)]
print(cpu / (n * events) * 1e6, *gcs)
"""


def main() -> None:
    n, events, reps = (int(a) for a in (sys.argv[1:] + ["5000", "20", "5"][len(sys.argv) - 1 :]))
    runs: dict[str, list[float]] = {"bare": [], "evstream": []}
    for rep in range(reps):
        for mode in ("bare", "evstream"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(n), str(events)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            us, gen0, gen1, gen2 = float(out[0]), *out[1:]
            runs[mode].append(us)
            print(f"rep {rep + 1} {mode:9} {us:6.2f} us/delivery  gc gen0/1/2 {gen0}/{gen1}/{gen2}")
    bare, ours = statistics.median(runs["bare"]), statistics.median(runs["evstream"])
    print(f"median: bare {bare:.2f}, evstream {ours:.2f} us/delivery = {ours / bare:.2f}x")


if __name__ == "__main__":
    main()
