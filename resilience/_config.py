"""
Process-wide switches behind one lock: ``set_active`` and the testing mode.

Decorators read these only on their slow paths (after a failure), never on a success.
"""

from __future__ import annotations

import threading

from collections.abc import Callable


__all__ = [
    "is_active",
    "is_testing",
    "on_reset",
    "reset_all",
    "set_active",
    "set_testing",
    "state",
]


class _State:
    """The switches; attribute reads are atomic, writes go through the lock."""

    __slots__ = ("active", "testing", "testing_attempts")

    def __init__(self) -> None:
        self.active = True
        self.testing = False
        self.testing_attempts: int | None = 1


state = _State()
_lock = threading.Lock()


def is_active() -> bool:
    """
    Whether retries, breakers and limits act (True unless ``set_active(False)``).

    .. versionadded:: 0.1.0
    """
    return state.active


def set_active(active: bool) -> None:
    """
    Switch every decorator's behaviour on or off, process-wide.

    Switched off, decorated callables run exactly once, as if undecorated.

    .. versionadded:: 0.1.0
    """
    with _lock:
        state.active = bool(active)


def is_testing() -> bool:
    """
    Whether the testing mode is on (see ``set_testing``).

    .. versionadded:: 0.1.0
    """
    return state.testing


class _TestingMode:
    """Returned by ``set_testing``: usable as a context manager that restores the old mode."""

    __slots__ = ("_previous",)

    def __init__(self, previous: tuple[bool, int | None]) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        with _lock:
            state.testing, state.testing_attempts = self._previous


def set_testing(testing: bool, *, attempts: int | None = 1) -> _TestingMode:
    """
    Turn the testing mode on or off for users' own test suites.

    In testing mode ``@retry`` never waits and makes at most *attempts* calls in all
    (None: the policy's own limit). Used as a context manager, the previous mode comes back
    on exit.

    Args:
        testing: Whether the mode is on.
        attempts: The most calls a retried callable makes while the mode is on.

    .. versionadded:: 0.1.0
    """
    if attempts is not None and (type(attempts) is not int or attempts < 1):
        msg = f"attempts must be a whole number >= 1 or None, got {attempts!r}"
        raise ValueError(msg)
    with _lock:
        previous = (state.testing, state.testing_attempts)
        state.testing = bool(testing)
        state.testing_attempts = attempts
    return _TestingMode(previous)


_resetters: list[Callable[[], None]] = []


def on_reset(reset: Callable[[], None]) -> Callable[[], None]:
    """Register *reset* (a module's registry clearer) to run on ``reset_all()``."""
    _resetters.append(reset)
    return reset


def reset_all() -> None:
    """Restore the switches and clear every registered registry (breakers, limits, pools)."""
    with _lock:
        state.active = True
        state.testing = False
        state.testing_attempts = 1
    for reset in list(_resetters):
        reset()
