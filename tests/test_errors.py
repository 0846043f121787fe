"""The error tree: hierarchy, attributes, messages, pickling."""

from __future__ import annotations

import pickle

import pytest

from resilience import (
    AttemptTimeoutError,
    BoundedTimeoutError,
    CircuitOpenError,
    RateLimitedError,
    ResilienceError,
    StoreUnavailableError,
)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            CircuitOpenError("payments", 12.5),
            "circuit breaker 'payments' is open; a probe call is allowed in 12.500 s",
        ),
        (
            RateLimitedError("api", 0.25, limit="10 per 1 s"),
            "rate limit of 10 per 1 s for key 'api' reached; retry in 0.250 s",
        ),
        (
            BoundedTimeoutError("db", limit=4, weight=2, timeout=1.5),
            "no permit for key 'db' within 1.500 s (asked for 2 of 4 units)",
        ),
        (
            StoreUnavailableError("k", store="redis://localhost", timeout=1.0),
            "redis://localhost did not answer within 1.000 s for key 'k'",
        ),
        (AttemptTimeoutError("fetch", 2.0), "attempt of fetch took longer than 2.000 s"),
    ],
)
def test_messages_name_key_and_wait(error, text):
    """Each message names the breaker/limiter/key and how long to wait."""
    assert isinstance(error, ResilienceError)
    assert text in str(error)


def test_timeouts_are_timeout_errors():
    """Timeout-flavoured errors are also builtin TimeoutErrors."""
    assert issubclass(BoundedTimeoutError, TimeoutError)
    assert issubclass(AttemptTimeoutError, TimeoutError)


def test_attributes():
    """Errors carry structured attributes, and retry_after is never negative."""
    err = CircuitOpenError("x", -1.0, opened_at=5.0)
    assert ("x", 0.0, 5.0) == (err.name, err.retry_after, err.opened_at)
    rl = RateLimitedError("k", 3.0)
    assert ("k", 3.0) == (rl.key, rl.retry_after)


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpenError("p", 1.0),
        RateLimitedError("k", 2.0, limit="1 per 1 s"),
        BoundedTimeoutError("d", limit=1, weight=1, timeout=0.5),
        StoreUnavailableError("k"),
        AttemptTimeoutError("f", 1.0),
    ],
)
def test_pickle_round_trip(error):
    """Errors survive pickling (multiprocessing, task queues) with their attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(error) is type(copy)
    assert str(error) == str(copy)
    assert error.__dict__ == copy.__dict__


def test_reprs_read_as_public_names():
    """Errors present themselves as resilience.X."""
    assert "resilience" == CircuitOpenError.__module__
