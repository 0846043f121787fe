"""Hypothesis strategies shared by the test modules."""

from __future__ import annotations

from hypothesis import strategies as st

from resilience.testing import backoffs, rands, retry_numbers


__all__ = ["backoffs", "jitter_amounts", "rands", "retry_numbers"]


def jitter_amounts(jitter: str) -> st.SearchStrategy[float]:
    """Valid ``jitter_amount`` values for *jitter*."""
    high = 1.0 if jitter in ("factor", "range") else 10.0
    return st.floats(min_value=0.0, max_value=high)
