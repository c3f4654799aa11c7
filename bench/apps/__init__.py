"""The four servers the benchmark compares, one module each (same routes)."""
