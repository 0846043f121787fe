"""Shared fixtures: a clean library for every test, virtual time, and the hypothesis profile."""

from __future__ import annotations

import os

from collections.abc import Iterator

import pytest

from hypothesis import HealthCheck, settings

from resilience.testing import FakeClock, reset, virtual_time


settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _clean_library() -> Iterator[None]:
    """Every test starts and ends with no breakers, limits, handlers or testing mode."""
    reset()
    yield
    reset()


@pytest.fixture(name="clock")
def _clock() -> Iterator[FakeClock]:
    """Virtual time installed as the default clock of every decorator."""
    with virtual_time() as clock:
        yield clock


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """Our async code targets asyncio (``asyncio.timeout``), so tests run there."""
    return "asyncio"
