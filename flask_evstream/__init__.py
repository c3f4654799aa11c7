"""Server-Sent Events for Flask: ``@sse_route`` streams a sync generator as a
correct ``text/event-stream`` response, served by gunicorn's gevent worker."""

from .brokers.base import BrokerUnavailable
from .channels import GAP_EVENT, Subscription
from .decorator import sse_route
from .event import Event
from .extension import EvStream, subscribers
from .helpers import last_event_id, parse_event_id
from .response import end_streams, live_streams
from .resumable import END_EVENT, producers, stream_id

__version__ = "0.2.0.dev0"

__all__ = [
    "END_EVENT",
    "GAP_EVENT",
    "BrokerUnavailable",
    "EvStream",
    "Event",
    "Subscription",
    "end_streams",
    "last_event_id",
    "live_streams",
    "parse_event_id",
    "producers",
    "sse_route",
    "stream_id",
    "subscribers",
]
