# gunicorn_conf.py: flask-evstream's settings, and yours on top.
from flask_evstream.gunicorn_conf import *  # noqa: F403

bind = ["0.0.0.0:9000"]
workers = 2
accesslog = "-"  # with the config's format: paths without query strings
