"""The policy layer: validation messages, from_dict/from_env, replace, == and repr."""

from __future__ import annotations

import dataclasses

from datetime import timedelta

import pytest

from resilience import (
    Backoff,
    BoundedPolicy,
    CircuitBreakerPolicy,
    RateLimitPolicy,
    RetryPolicy,
)


class TestRetryPolicy:
    def test_defaults(self):
        """The defaults are the contract's: 10 attempts, Tinker backoff, 60 s Retry-After cap."""
        p = RetryPolicy()
        assert (10, None, None, Backoff(), Exception, None, 60.0) == (
            p.attempts,
            p.timeout,
            p.progress_timeout,
            p.backoff,
            p.on,
            p.on_result,
            p.retry_after_cap,
        )

    @pytest.mark.parametrize(
        ("fields", "error", "match"),
        [
            ({"attempts": 0}, ValueError, r"RetryPolicy\.attempts must be >= 1"),
            ({"attempts": 2.5}, TypeError, r"RetryPolicy\.attempts must be a whole number"),
            ({"timeout": 0}, ValueError, r"RetryPolicy\.timeout must be > 0"),
            ({"progress_timeout": -1}, ValueError, r"RetryPolicy\.progress_timeout must be > 0"),
            ({"attempt_timeout": "5"}, TypeError, r"RetryPolicy\.attempt_timeout must be a number"),
            ({"retry_after_cap": -1}, ValueError, r"RetryPolicy\.retry_after_cap must be > 0"),
            ({"on": 5}, TypeError, r"RetryPolicy\.on must be an exception class"),
            ({"on": ()}, TypeError, r"RetryPolicy\.on must be an exception class"),
            ({"on": (ValueError, int)}, TypeError, r"RetryPolicy\.on must be"),
            ({"on_result": 3}, TypeError, r"RetryPolicy\.on_result must be a callable"),
            ({"delay_hook": "x"}, TypeError, r"RetryPolicy\.delay_hook must be a callable"),
            ({"backoff": {"base": 1}}, TypeError, r"RetryPolicy\.backoff must be a Backoff"),
            ({"clock": object()}, TypeError, r"RetryPolicy\.clock must provide monotonic"),
        ],
    )
    def test_bad_values_name_the_field(self, fields, error, match):
        """Bad values fail at construction, naming the field and the accepted range."""
        with pytest.raises(error, match=match):
            RetryPolicy(**fields)

    def test_timedelta_stored_as_seconds(self):
        """timedelta durations become float seconds."""
        p = RetryPolicy(timeout=timedelta(minutes=2), progress_timeout=timedelta(seconds=1.5))
        assert (120.0, 1.5) == (p.timeout, p.progress_timeout)

    def test_on_spellings(self):
        """on= accepts a class, a tuple of classes, or a predicate."""
        for on in (ValueError, (KeyError, ValueError), lambda e: isinstance(e, ValueError)):
            p = RetryPolicy(on=on)
            assert p._retryable(ValueError())
            assert not p._retryable(TypeError())

    def test_replace_eq_repr(self):
        """Policies are frozen dataclasses: replace, == and repr work."""
        p = RetryPolicy(attempts=3)
        assert RetryPolicy(attempts=5) == dataclasses.replace(p, attempts=5)
        assert p == RetryPolicy(attempts=3)
        assert "RetryPolicy(attempts=3" in repr(p)
        assert "_retryable" not in repr(p)
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.attempts = 4  # type: ignore[misc]

    def test_from_dict_with_nested_backoff(self):
        """from_dict builds the nested Backoff from a mapping."""
        p = RetryPolicy.from_dict({"attempts": 4, "timeout": 30, "backoff": {"base": 1, "max": 5}})
        assert RetryPolicy(attempts=4, timeout=30.0, backoff=Backoff(base=1, max=5)) == p

    def test_from_dict_unknown_keys(self):
        """Unknown keys are a ValueError naming them all."""
        with pytest.raises(ValueError, match="unknown RetryPolicy field.*: attemps, tiemout"):
            RetryPolicy.from_dict({"attemps": 4, "tiemout": 1})

    def test_from_dict_unknown_nested_key(self):
        """An unknown key inside backoff is named too."""
        with pytest.raises(ValueError, match="unknown Backoff field.*: bsae"):
            RetryPolicy.from_dict({"backoff": {"bsae": 1}})

    def test_from_dict_needs_mapping(self):
        """from_dict of a non-mapping is a TypeError."""
        with pytest.raises(TypeError, match="takes a mapping"):
            RetryPolicy.from_dict([("attempts", 1)])  # type: ignore[arg-type]

    def test_from_env(self):
        """from_env reads numbers, none and the nested backoff from prefixed variables."""
        env = {
            "SVC_RETRY_ATTEMPTS": "none",
            "SVC_RETRY_TIMEOUT": "12.5",
            "SVC_RETRY_BACKOFF_JITTER": "equal",
            "SVC_RETRY_BACKOFF_MAX": "30",
        }
        p = RetryPolicy.from_env("SVC_RETRY_", env)
        assert (
            RetryPolicy(attempts=None, timeout=12.5, backoff=Backoff(jitter="equal", max=30)) == p
        )

    def test_from_env_bad_value_names_field(self):
        """A bad environment value fails like any bad value, naming the field."""
        with pytest.raises(TypeError, match=r"RetryPolicy\.attempts"):
            RetryPolicy.from_env("X_", {"X_ATTEMPTS": "many"})

    def test_to_dict_round_trip(self):
        """to_dict() gives plain data that from_dict() accepts back."""
        p = RetryPolicy(attempts=2, backoff=Backoff(base=0.1))
        data = p.to_dict()
        assert {"base": 0.1} == {"base": data["backoff"]["base"]}
        assert p == RetryPolicy.from_dict(data)


class TestOtherPolicies:
    def test_breaker_validation(self):
        """Breaker fields are checked with named errors."""
        with pytest.raises(
            ValueError, match=r"CircuitBreakerPolicy\.failure_threshold must be >= 1"
        ):
            CircuitBreakerPolicy(failure_threshold=0)
        with pytest.raises(ValueError, match=r"CircuitBreakerPolicy\.reset_timeout must be > 0"):
            CircuitBreakerPolicy(reset_timeout=0)
        with pytest.raises(ValueError, match=r"half_open_max_calls must be >= 1"):
            CircuitBreakerPolicy(half_open_max_calls=0)

    def test_rate_validation(self):
        """rate must be a positive whole number and burst within [1, rate]."""
        with pytest.raises(ValueError, match=r"RateLimitPolicy\.rate must be >= 1"):
            RateLimitPolicy(rate=0)
        with pytest.raises(TypeError, match=r"RateLimitPolicy\.rate must be a whole number"):
            RateLimitPolicy(rate=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"RateLimitPolicy\.burst must be in \[1, 5\]"):
            RateLimitPolicy(rate=5, burst=6)
        with pytest.raises(ValueError, match=r"RateLimitPolicy\.per must be > 0"):
            RateLimitPolicy(rate=5, per=0)

    def test_bounded_validation(self):
        """limit >= 1 and weight <= limit, with named errors."""
        with pytest.raises(ValueError, match=r"BoundedPolicy\.limit must be >= 1"):
            BoundedPolicy(limit=0)
        with pytest.raises(ValueError, match=r"BoundedPolicy\.weight must be <= limit \(2\)"):
            BoundedPolicy(limit=2, weight=3)

    def test_from_dict_each(self):
        """Every policy has from_dict accepting its field names."""
        assert RateLimitPolicy(rate=5, per=2.0) == RateLimitPolicy.from_dict({"rate": 5, "per": 2})
        assert BoundedPolicy(limit=3) == BoundedPolicy.from_dict({"limit": 3})
        assert CircuitBreakerPolicy(name="x") == CircuitBreakerPolicy.from_dict({"name": "x"})


def test_from_env_text_field_keeps_none_word():
    """A text field set to "none" keeps the word; other fields read it as None."""
    policy = RetryPolicy.from_env("P_", {"P_ATTEMPTS": "none", "P_BACKOFF_JITTER": "none"})
    assert (None, Backoff(jitter="none")) == (policy.attempts, policy.backoff)
