"""Benchmarks and the backoff contention study; run with ``python -m benchmarks.run``."""
