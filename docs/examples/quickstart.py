import time

from flask import Flask

from flask_evstream import sse_route

app = Flask(__name__)


@app.get("/clock")
@sse_route(retry=3000)
def clock():
    while True:
        yield {"now": time.time()}  # a dict is sent as compact JSON
        time.sleep(1)
