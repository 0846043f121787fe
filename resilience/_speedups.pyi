"""The optional C accelerator of ``resilience._deadline``: the deadline's hot part."""

from collections.abc import Iterator
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

def af_configure(lease_ids: Iterator[int], holder: Any, /) -> None:
    """Give ``af_lease_begin`` the pool module's lease ids and the clock holder."""

def af_lease_begin(leases: dict[int, float], /) -> int:
    """Record one unit's lease starting now in *leases*; return its id."""
