"""The servers the benchmark compares, one module each (see common.py for the routes)."""
