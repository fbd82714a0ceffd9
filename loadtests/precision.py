"""Response-time bucketing for Locust that keeps sub-millisecond precision (no gevent, no locust import,
so tests can check it without monkey-patching their own process)."""

from __future__ import annotations


def bucket_response_time(response_time: float) -> float:
    """3 significant digits at every scale (0.347 ms stays 0.347, 147.4 becomes 147, 3432 becomes 3430),
    instead of Locust's whole milliseconds below 100 ms; still a bounded number of distinct keys."""
    return float(f"{response_time:.3g}")
