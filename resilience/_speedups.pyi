"""The optional C accelerator: the deadline's and the memory rate limit's hot parts."""

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import CodeType
from typing import Any

from resilience._deadline import Deadline

class DeadlineCore:
    """``deadline``'s base in C: made, entered and left as ``_deadline._PurePython`` is."""

    at: float
    owner: Deadline
    seconds: float
    _code: CodeType | None
    _lasti: int
    _token: Any
    def __init__(self, seconds: float | Any, /) -> None: ...
    def _fresh(self) -> Deadline: ...
    def __enter__(self) -> Deadline: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

def configure(
    current: ContextVar[Any],
    default: Any,
    seconds: Any,
    maximum: float,
    cls: type[DeadlineCore],
    /,
) -> None:
    """Give the C type the deadline variable, the clock holder, the slow-path check, the class."""

class RateStart:
    """``MemoryRateBackend.reserve``'s start with room: 0.0 (started), or None (not that case)."""

    def __init__(
        self,
        state: Any,
        window: Any,
        clock: Any,
        holder: Any,
        system: Any,
        acquire: Callable[[], object],
        release: Callable[[], object],
        trim: Callable[[float], object],
    ) -> None: ...
    def __call__(self) -> float | None: ...

class ThrottleTally:
    """The C twin of ``_throttle.state.Tally``: the current bucket's accepts, its end, calm."""

    until: float
    calm: int
    def accept(self) -> None: ...
    def peek(self) -> int: ...
    def take(self) -> int: ...

class ThrottleRunner:
    """``@throttled``'s closed path in C: call and count the accept; else the Python runner."""

    def __init__(
        self,
        layer: Any,
        epoch: Any,
        switches: Any,
        source: Any,
        call_next: Callable[..., Any] | None,
        slow: Callable[..., Any],
        failed: Callable[[BaseException], object],
        late: Callable[[float], object],
        /,
    ) -> None: ...
    def __call__(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        /,
    ) -> Any: ...

def af_configure(lease_ids: Iterator[int], holder: Any, /) -> None:
    """Give ``af_lease_begin`` the pool module's lease ids and the clock holder."""

def af_lease_begin(leases: dict[int, float], /) -> int:
    """Record one unit's lease starting now in *leases*; return its id."""

class CallSink:
    """``RollingMetrics``' call tap in C: each traced call counted into its name's slice."""

    def __init__(
        self, bounds: list[int], width: int, spill: Callable[[Any], object], most: int
    ) -> None: ...
    def __call__(self, call: Any, /) -> None: ...
    def take(self) -> list[tuple[str, int, int, int, tuple[tuple[int, int], ...]]]: ...
    @property
    def waiting(self) -> int: ...
