"""
tenacity in and out: ``RetryPolicy.from_tenacity`` and ``RetryPolicy.to_tenacity``.

Imported only by those two methods, so ``import resilience`` never imports tenacity (an extra:
``pip install "resilience[tenacity]"``). Each tenacity strategy maps to the policy fields that
do the same thing, or fails with a ``ValueError`` naming the strategy (or the argument) that
has no equivalent and what to write instead; nothing is dropped silently.

A retry strategy becomes a pair of predicates, one for exceptions (``on``) and one for
results (``on_result``), None meaning "never"; ``|`` and ``&`` combine pairs side by side,
which is exactly how tenacity combines them, since each of its strategies answers for one
outcome at a time.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tenacity

from tenacity.wait import wait_base

from resilience._backoff import Backoff


if TYPE_CHECKING:
    from resilience._policies import RetryPolicy


__all__ = ["policy_fields", "tenacity_kwargs"]

_ORIGIN = "RetryPolicy.from_tenacity"
Predicate = Callable[[Any], bool]
# (exceptions, results): a predicate, a tuple of exception classes, or None for "never"
Pair = tuple[Any, Predicate | None]


def _unmapped(what: object, instead: str) -> ValueError:
    return ValueError(f"{_ORIGIN}: {what} has no RetryPolicy equivalent; {instead}")


def _name(obj: object) -> str:
    return type(obj).__name__


# -- stop ------------------------------------------------------------------------------------


def _stop_fields(stop: object) -> dict[str, Any]:
    """``attempts`` and ``timeout`` for a stop strategy (the first limit reached wins)."""
    if isinstance(stop, tenacity.stop_after_attempt):
        return {"attempts": int(stop.max_attempt_number)}
    if isinstance(stop, tenacity.stop_after_delay | tenacity.stop_before_delay):
        return {"attempts": None, "timeout": float(stop.max_delay)}
    if isinstance(stop, type(tenacity.stop_never)):
        return {"attempts": None}
    if isinstance(stop, tenacity.stop_any):
        parts = [_stop_fields(part) for part in stop.stops]
        attempts = [p["attempts"] for p in parts if p.get("attempts") is not None]
        timeouts = [p["timeout"] for p in parts if p.get("timeout") is not None]
        combined: dict[str, Any] = {"attempts": min(attempts) if attempts else None}
        if timeouts:
            combined["timeout"] = min(timeouts)
        return combined
    if isinstance(stop, tenacity.stop_all) and len(stop.stops) == 1:
        return _stop_fields(stop.stops[0])
    if isinstance(stop, tenacity.stop_all):
        raise _unmapped(
            "stop=stop_all(...) of several limits",
            "every limit given to RetryPolicy applies and the first reached stops (stop_any)",
        )
    raise _unmapped(f"stop={_name(stop)}", "use attempts= and timeout=")


# -- wait ------------------------------------------------------------------------------------


def _fixed(seconds: float) -> Backoff:
    return Backoff(strategy="constant", base=seconds, max=seconds, jitter="none")


def _uniform(low: float, high: float) -> Backoff:
    """Uniform in [low, high): a constant delay with ``range`` jitter around the middle."""
    if high <= low:
        return _fixed(max(low, 0.0))
    middle = (low + high) / 2
    return Backoff(
        strategy="constant",
        base=middle,
        max=high,
        jitter="range",
        jitter_amount=(high - low) / (high + low),
    )


def _exponential(wait: Any, jitter: str) -> Backoff:
    multiplier, cap, growth = float(wait.multiplier), float(wait.max), float(wait.exp_base)
    if growth < 1:
        raise _unmapped(f"wait={_name(wait)}(exp_base={growth:g})", "Backoff needs multiplier >= 1")
    floor = float(wait.min)
    if jitter == "full" and floor > 0:
        raise _unmapped(f"wait={_name(wait)}(min={floor:g})", 'Backoff(jitter="full") draws from 0')
    if floor > min(multiplier, cap):  # below the first delay, a floor never applies
        raise _unmapped(
            f"wait={_name(wait)}(min={floor:g}) above its first delay",
            "Backoff has no floor: raise base instead",
        )
    return Backoff(base=min(multiplier, cap), max=cap, multiplier=growth, jitter=jitter)


def _sum_of_parts(wait: Any) -> Backoff:
    """``wait_a + wait_b``: fixed parts add up; at most one uniform part can join them."""
    fixed = 0.0
    uniform: tuple[float, float] | None = None
    for part in wait.wait_funcs:
        if isinstance(part, tenacity.wait_combine):
            part = _sum_of_parts(part)  # noqa: PLW2901 - nested sums flatten
        if isinstance(part, tenacity.wait_fixed):
            fixed += float(part.wait_fixed)
        elif isinstance(part, Backoff) and part.strategy == "constant" and part.jitter == "none":
            fixed += part.base
        elif isinstance(part, tenacity.wait_random) and uniform is None:
            uniform = (float(part.wait_random_min), float(part.wait_random_max))
        else:
            raise _unmapped(
                f"wait=... + {_name(part)}",
                "only wait_fixed parts and one wait_random part add up to a Backoff",
            )
    if uniform is None:
        return _fixed(fixed)
    return _uniform(uniform[0] + fixed, uniform[1] + fixed)


def _backoff(wait: object) -> Backoff:
    """The ``Backoff`` whose delay before retry n equals tenacity's wait after attempt n + 1."""
    if isinstance(wait, Backoff):
        return wait
    if isinstance(wait, tenacity.wait_fixed):  # wait_none too
        return _fixed(float(wait.wait_fixed))
    if isinstance(wait, tenacity.wait_random):
        return _uniform(float(wait.wait_random_min), float(wait.wait_random_max))
    if isinstance(wait, tenacity.wait_random_exponential):
        return _exponential(wait, "full")
    if isinstance(wait, tenacity.wait_exponential):
        return _exponential(wait, "none")
    if isinstance(wait, tenacity.wait_exponential_jitter):
        if float(wait.jitter) != 0.0:
            raise _unmapped(
                f"wait=wait_exponential_jitter(jitter={float(wait.jitter):g})",
                'its jitter is absolute seconds; Backoff(jitter="additive") is relative',
            )
        return _exponential(wait, "none")
    if isinstance(wait, tenacity.wait_incrementing):
        start, step, cap = float(wait.start), float(wait.increment), float(wait.max)
        if step == 0.0:
            return _fixed(min(max(start, 0.0), cap))
        if start == step and start > 0:
            return Backoff(strategy="linear", base=min(start, cap), max=cap, jitter="none")
        raise _unmapped(
            f"wait=wait_incrementing(start={start:g}, increment={step:g})",
            'Backoff(strategy="linear") waits base * (n + 1): start must equal increment',
        )
    if isinstance(wait, tenacity.wait_combine):
        return _sum_of_parts(wait)
    raise _unmapped(f"wait={_name(wait)}", "use a Backoff")


# -- retry -----------------------------------------------------------------------------------


def _always(_: object) -> bool:
    return True


def _never(_: object) -> bool:
    return False


def _cause_is(types: Any) -> Predicate:
    def check(exc: BaseException) -> bool:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current.__cause__, types):
                return True
            current = current.__cause__
        return False

    return check


def _negated(predicate: Predicate) -> Predicate:
    return lambda value: not predicate(value)


def _pair(strategy: object) -> Pair:
    """(exception predicate, result predicate) for one tenacity retry strategy."""
    # Subclasses that retry every result come first: they extend retry_if_exception.
    if isinstance(
        strategy, tenacity.retry_unless_exception_type | tenacity.retry_if_not_exception_message
    ):
        return (strategy.predicate, _always)
    if type(strategy) is tenacity.retry_if_exception_type:
        return (_types(strategy.exception_types), None)  # kept as classes: a readable `on`
    if isinstance(strategy, tenacity.retry_if_exception):
        return (strategy.predicate, None)
    if isinstance(strategy, tenacity.retry_if_exception_cause_type):
        return (_cause_is(strategy.exception_cause_types), None)
    if isinstance(strategy, tenacity.retry_if_result):
        return (None, strategy.predicate)
    if isinstance(strategy, tenacity.retry_if_not_result):
        return (None, _negated(strategy.predicate))
    if isinstance(strategy, type(tenacity.retry_always)):
        return (_always, _always)
    if isinstance(strategy, type(tenacity.retry_never)):
        return (None, None)
    if isinstance(strategy, tenacity.retry_any | tenacity.retry_all):
        pairs = [_pair(part) for part in strategy.retries]
        combine = any if isinstance(strategy, tenacity.retry_any) else all
        return (_joined(combine, [p[0] for p in pairs]), _joined(combine, [p[1] for p in pairs]))
    raise _unmapped(f"retry={_name(strategy)}", "use on= (exceptions) and on_result= (results)")


def _types(value: Any) -> tuple[type[BaseException], ...]:
    return value if isinstance(value, tuple) else (value,)


def _as_predicate(check: Any) -> Predicate:
    if isinstance(check, tuple):
        return lambda exc: isinstance(exc, check)
    predicate: Predicate = check
    return predicate


def _joined(combine: Callable[[Any], bool], checks: list[Any]) -> Any:
    """Combine checks (predicates, or tuples of exception classes; None: never) by any/all."""
    if combine is any:
        checks = [c for c in checks if c is not None]
        if not checks:
            return None
        if all(isinstance(c, tuple) for c in checks):  # classes stay classes
            return tuple(t for c in checks for t in c)
    elif any(c is None for c in checks):
        return None
    if len(checks) == 1:
        return checks[0]
    predicates = [_as_predicate(c) for c in checks]
    return lambda value: combine(p(value) for p in predicates)


def _retry_fields(strategy: object) -> dict[str, Any]:
    on, on_result = _pair(strategy)
    if isinstance(on, tuple) and len(on) == 1:
        on = on[0]
    return {"on": _never if on is None else on, "on_result": on_result}


# -- whole Retrying objects ------------------------------------------------------------------

# Arguments of a Retrying that RetryPolicy cannot take over, with what to do instead.
_CALLBACKS = {
    "before": ("before_nothing", "attach a handler to resilience.retry events"),
    "after": ("after_nothing", "attach a handler to resilience.retry events"),
    "before_sleep": (None, 'attach(handler, "resilience.retry.retry") or attach_structlog()'),
    "retry_error_callback": (None, "use fallback= (it receives the exception)"),
}


def _check_retrying(retrying: Any) -> None:
    for field, (default, instead) in _CALLBACKS.items():
        value = getattr(retrying, field, None)
        if value is not None and getattr(value, "__name__", None) != default:
            raise _unmapped(f"{field}={value!r}", instead)
    if getattr(retrying, "retry_error_cls", tenacity.RetryError) is not tenacity.RetryError:
        raise _unmapped("retry_error_cls", "giving up re-raises the last exception itself")
    if not getattr(retrying, "enabled", True):
        raise _unmapped("enabled=False", "use resilience.set_active(False)")


def policy_fields(
    source: object = None, *, stop: object = None, wait: object = None, retry: object = None
) -> dict[str, Any]:
    """The ``RetryPolicy`` fields equivalent to a tenacity ``Retrying`` and/or its strategies."""
    retrying = source
    if not isinstance(source, tenacity.BaseRetrying):
        retrying = getattr(source, "retry", source)  # a function decorated with @tenacity.retry
    if retrying is not None:
        if not isinstance(retrying, tenacity.BaseRetrying):
            msg = (
                f"{_ORIGIN}() takes a tenacity Retrying or AsyncRetrying (or a function "
                f"decorated with @tenacity.retry), got {_name(source)}"
            )
            raise TypeError(msg)
        _check_retrying(retrying)
        stop = retrying.stop if stop is None else stop
        wait = retrying.wait if wait is None else wait
        retry = retrying.retry if retry is None else retry
    fields: dict[str, Any] = {}
    if stop is not None:
        fields |= _stop_fields(stop)
    if wait is not None:
        fields["backoff"] = _backoff(wait)
    if retry is not None:
        fields |= _retry_fields(retry)
    name = getattr(retrying, "_name", None)
    if name is not None:
        fields["name"] = name
    return fields


# -- and back --------------------------------------------------------------------------------


class _ServerPacedWait(wait_base):
    """tenacity ``wait=``: the policy's server-given delay when there is one, else its backoff."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.hook = policy.delay_hook
        self.cap = float(policy.retry_after_cap)  # type: ignore[arg-type]
        self.backoff = policy.backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and self.hook is not None:
            seen = outcome.exception() if outcome.failed else outcome.result()
            try:
                server = self.hook(seen)
            except Exception:  # a broken hook must not replace the caller's error
                server = None
            if server is not None and server > 0 and math.isfinite(server):
                return min(float(server), self.cap)
        return self.backoff(retry_state)


def _last_outcome(retry_state: tenacity.RetryCallState) -> Any:
    """On giving up: re-raise the last exception or return the last result, as @retry does."""
    outcome = retry_state.outcome
    assert outcome is not None  # tenacity gives up only after an attempt
    return outcome.result()


# Fields tenacity has no strategy for: to_tenacity() refuses a policy that sets them.
_NOT_IN_TENACITY = {
    "progress_timeout": "tenacity has no progress deadline shared by calls",
    "attempt_timeout": "tenacity does not cancel a stalled attempt",
    "fallback": "pass retry_error_callback= to tenacity yourself",
    "budget": "tenacity has no retry budget",
}


def tenacity_kwargs(policy: RetryPolicy, *, asynchronous: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` (or ``AsyncRetrying``) that retry as *policy*."""
    for field, why in _NOT_IN_TENACITY.items():
        if getattr(policy, field) is not None:
            msg = f"RetryPolicy.to_tenacity: {field}= does not map to tenacity: {why}"
            raise ValueError(msg)
    stop: Any = tenacity.stop_never
    if policy.attempts is not None:
        stop = tenacity.stop_after_attempt(policy.attempts)
    if policy.timeout is not None:
        deadline = tenacity.stop_before_delay(float(policy.timeout))  # type: ignore[arg-type]
        stop = deadline if policy.attempts is None else stop | deadline
    retry: Any = tenacity.retry_if_exception(policy._retryable)
    if policy.on_result is not None:
        retry = retry | tenacity.retry_if_result(policy.on_result)
    kwargs: dict[str, Any] = {
        "stop": stop,
        "wait": policy.backoff if policy.delay_hook is None else _ServerPacedWait(policy),
        "retry": retry,
        "retry_error_callback": _last_outcome,
    }
    if policy.clock is not None:
        kwargs["sleep"] = policy.clock.asleep if asynchronous else policy.clock.sleep
    return kwargs
