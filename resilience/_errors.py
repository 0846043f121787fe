"""
The exception tree: every error this package raises on its own account.

::

    Exception
     └── ResilienceError
          ├── CircuitOpenError
          ├── RateLimitedError
          ├── BoundedTimeoutError (also a TimeoutError)
          ├── AttemptTimeoutError (also a TimeoutError)
          ├── DeadlineExceededError (also a TimeoutError)
          ├── ThrottledError
          └── StoreUnavailableError

On giving up, ``@retry`` re-raises the caller's *original* exception, never one of these.
Each error carries structured attributes and a message that names the breaker, limiter or key
and how long to wait, so a log line explains itself.

``CONTROL_FLOW`` lists the exceptions that are not failures at all (cancellation, Ctrl-C,
interpreter exit, a generator being closed): every decorator lets them through untouched,
never retried, counted, handed to a predicate, a fallback or a delay hook.
"""

from __future__ import annotations

import asyncio
import time

from typing import Final


__all__ = [
    "CONTROL_FLOW",
    "AttemptTimeoutError",
    "BoundedTimeoutError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "RateLimitedError",
    "ResilienceError",
    "StoreUnavailableError",
    "ThrottledError",
    "is_control_flow",
]


#: Control flow, not failure (contract v2): these pass through every decorator untouched.
CONTROL_FLOW: Final[tuple[type[BaseException], ...]] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


def is_control_flow(exc: object) -> bool:
    """Whether *exc* is cancellation, an interrupt, an exit or a generator's close."""
    return isinstance(exc, CONTROL_FLOW)


class ResilienceError(Exception):
    """
    Base class of every error raised by ``resilience`` itself.

    .. versionadded:: 0.1.0
    """

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle by state: subclasses take keyword-only arguments the default cannot replay."""
        return (_rebuild, (type(self), self.args, self.__dict__))


class CircuitOpenError(ResilienceError):
    """
    A call was refused because its circuit breaker is open (or half-open and busy).

    Attributes:
        name: The breaker's name.
        retry_after: Seconds until a probe call is allowed (0.0 when one may run now).
        opened_at: Wall-clock epoch seconds at which the breaker opened, if known.
        state: ``"open"``, or ``"half_open"`` when every probe slot is taken.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        retry_after: float,
        *,
        opened_at: float | None = None,
        reason: str = "",
        state: str = "open",
    ) -> None:
        self.name = name
        self.retry_after = max(0.0, retry_after)
        self.opened_at = opened_at
        self.state = state
        detail = f" ({reason})" if reason else ""
        since = ""
        if opened_at is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(opened_at))
            since = f" since {stamp}.{int(opened_at % 1 * 1000):03d} UTC"
        what = "half-open" if state == "half_open" else "open"
        super().__init__(
            f"circuit breaker {name!r} is {what}{since}{detail}; "
            f"a probe call is allowed in {self.retry_after:.3f} s"
        )


class RateLimitedError(ResilienceError):
    """
    A call was refused because its rate budget (or the key's backoff window) has no room.

    Attributes:
        key: The limiter's key.
        retry_after: Seconds until the call could start.
        limit: A human-readable statement of the limit, such as ``"10 per 1.0 s"``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, retry_after: float, *, limit: str = "", reason: str = "") -> None:
        self.key = key
        self.retry_after = max(0.0, retry_after)
        self.limit = limit
        what = f" of {limit}" if limit else ""
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"rate limit{what} for key {key!r} reached{why}; retry in {self.retry_after:.3f} s"
        )


class BoundedTimeoutError(ResilienceError, TimeoutError):
    """
    A caller waited ``timeout`` seconds for permits of a ``@bounded`` pool and got none.

    Attributes:
        key: The pool's key.
        limit: The pool's limit in units of weight.
        weight: The units the caller asked for.
        timeout: How long the caller waited, in seconds.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, *, limit: int, weight: int, timeout: float) -> None:
        self.key = key
        self.limit = limit
        self.weight = weight
        self.timeout = timeout
        super().__init__(
            f"no permit for key {key!r} within {timeout:.3f} s "
            f"(asked for {weight} of {limit} units); try again later or raise the limit"
        )


class StoreUnavailableError(ResilienceError):
    """
    The shared-state store (such as Redis) could not be reached in time.

    Attributes:
        key: The key whose state was wanted.
        store: A short description of the store.
        timeout: The store's time limit in seconds.
        reason: The server's answer when it answered with an error (such as ``READONLY``,
            ``CLUSTERDOWN``, ``WRONGTYPE``), else None (it did not answer in time).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        key: str,
        *,
        store: str = "store",
        timeout: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.key = key
        self.store = store
        self.timeout = timeout
        self.reason = reason
        if reason is not None:  # the server answered, with an error
            super().__init__(f"{store} failed for key {key!r}: {reason}")
            return
        within = f" within {timeout:.3f} s" if timeout is not None else ""
        super().__init__(f"{store} did not answer{within} for key {key!r}")


class AttemptTimeoutError(ResilienceError, TimeoutError):
    """
    One attempt of an async callable ran past ``RetryPolicy.attempt_timeout`` and was cancelled.

    ``@retry`` treats it as retryable; if it is the last failure, this is what propagates.

    Attributes:
        name: The retried callable's name.
        timeout: The attempt time limit in seconds.

    .. versionadded:: 0.1.0
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"attempt of {name} took longer than {timeout:.3f} s and was cancelled")


class DeadlineExceededError(ResilienceError, TimeoutError):
    """
    A deadline set with ``resilience.deadline()`` passed while async work was still running.

    The work was cancelled at the deadline. Sync code cannot be interrupted, so it never
    raises this: a sync block that overruns keeps its own outcome.

    Attributes:
        seconds: The deadline's length in seconds, as it was set.
        where: Where it was set (``file:line``), or ``""`` when unknown.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        seconds: float,
        *,
        where: str = "",
        name: str = "",
        detail: str = "the work still running was cancelled",
    ) -> None:
        self.seconds = seconds
        self.where = where
        self.name = name
        at = f" set at {where}" if where else ""
        what = f" ({name})" if name else ""
        then = f"; {detail}" if detail else ""
        super().__init__(f"the deadline of {seconds:.3f} s{at} passed{what}{then}")


class ThrottledError(ResilienceError):
    """
    A call was refused locally by ``@throttled``: the upstream has been refusing too many.

    Attributes:
        key: The throttle's key (or the decorated callable's name).
        probability: The rejection probability the call drew against.
        requests: The requests counted over the window before the call.
        accepts: The accepts counted over the window before the call.

    .. versionadded:: 0.2.0
    """

    def __init__(self, key: str, *, probability: float, requests: int, accepts: int) -> None:
        self.key = key
        self.probability = probability
        self.requests = requests
        self.accepts = accepts
        super().__init__(
            f"throttled {key!r} locally: the upstream accepted {accepts} of {requests} "
            f"recent requests, so calls are refused with probability {probability:.3f}; "
            f"retry later"
        )


def _rebuild(
    cls: type[ResilienceError], args: tuple[object, ...], state: dict[str, object]
) -> ResilienceError:
    """Recreate an error without re-running its ``__init__``."""
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err
