"""``HedgingPolicy``: how many attempts ``@hedged`` adds, when, and past which outcomes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from resilience._budget.state import RetryBudget
from resilience._dictable import FromDict
from resilience._validate import check_int, duration, exception_predicate, optional_callable
from resilience.typing import Clock, ExceptionFilter


__all__ = ["HedgingPolicy"]

MAX_HEDGED_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class HedgingPolicy(FromDict):
    """
    How ``@hedged`` races attempts of an async call against its tail latency.

    Args:
        max_hedged_attempts: Attempts on top of the primary, 1 to 10.
        delay: Latency mode (> 0): when no attempt has produced an outcome for *delay*
            seconds since the last one started, the next starts beside those in flight.
            Parallel mode (0): every attempt starts at once. Fallback mode (None): the next
            starts only when the previous one ended with a handled outcome.
        on: The exceptions that are handled (the next attempt starts at once instead of the
            exception winning): a class, a tuple of classes, or a predicate.
        on_result: A predicate ``result -> bool``: True makes a result handled.
        budget: A ``RetryBudget`` (or any object with ``record_call()`` and
            ``try_retry()``, such as a retry quota) that every hedge draws from and every
            call deposits into, so a fleet cannot multiply its load; a refused hedge is not
            started (``resilience.hedge.refused``).
        name: A name for events (default: the callable's qualified name).
        clock: Where the delay is timed (default: the process's clock, virtual in tests).

    .. versionadded:: 0.2.0
    """

    max_hedged_attempts: int = 1
    delay: float | timedelta | None = 2.0
    on: ExceptionFilter = Exception
    on_result: Callable[[Any], bool] | None = None
    budget: Any = None
    name: str | None = None
    clock: Clock | None = None
    _handled: Callable[[BaseException], bool] = field(
        init=False,
        repr=False,
        compare=False,
        default=None,  # type: ignore[assignment]
    )

    def __post_init__(self) -> None:
        owner = "HedgingPolicy"
        check_int(owner, "max_hedged_attempts", self.max_hedged_attempts, low=1, high=10)
        object.__setattr__(
            self, "delay", duration(owner, "delay", self.delay, allow_none=True, allow_inf=False)
        )
        object.__setattr__(self, "_handled", exception_predicate(owner, "on", self.on))
        optional_callable(owner, "on_result", self.on_result)
        budget = self.budget
        if budget is not None and not (
            callable(getattr(budget, "try_retry", None))
            and callable(getattr(budget, "record_call", None))
        ):
            msg = (
                f"{owner}.budget must be a RetryBudget (or an object with record_call() and "
                f"try_retry()) or None, got {type(budget).__name__}"
            )
            raise TypeError(msg)
        if self.name is not None and not isinstance(self.name, str):
            msg = f"{owner}.name must be a string or None, got {type(self.name).__name__}"
            raise TypeError(msg)
        if self.clock is not None and not isinstance(self.clock, Clock):
            msg = (
                f"{owner}.clock must provide monotonic(), time(), sleep() and asleep() "
                f"(see resilience.typing.Clock), got {type(self.clock).__name__}"
            )
            raise TypeError(msg)

    @property
    def mode(self) -> str:
        """``"latency"`` (delay > 0), ``"parallel"`` (delay 0) or ``"fallback"`` (None)."""
        if self.delay is None:
            return "fallback"
        return "parallel" if self.delay == 0.0 else "latency"


HedgingPolicy._nested = {"budget": RetryBudget}
