"""A small app that shows flask-evstream: a clock, a typewriter chat and job progress."""
