"""The fault tests' servers: one cluster (with replicas) and one Sentinel pair per worker."""

from __future__ import annotations

import gc
import warnings

from collections.abc import Iterator

import pytest

from ..redis_servers import Servers


@pytest.fixture(name="servers", scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Servers the fault tests may kill, pause, flush and fail over (never the shared one)."""
    servers = Servers(tmp_path_factory.mktemp("faults"))
    yield servers
    servers.stop()


@pytest.fixture(name="discarded_nodes_collected")
def _discarded_nodes_collected() -> Iterator[None]:
    """
    After a fault test, collect what redis-py dropped when the topology changed.

    When a primary dies, fails over or a slot moves, redis-py's cluster clients (the sync one
    a store uses; an asyncio one a test makes) replace their nodes without closing them (their
    connections were to the old owner); what is left warns whenever the garbage collector finds
    it, which may be in a later, unrelated test. Collecting here, with those warnings off, keeps them in the test that
    caused them. Our own clients are closed by each test (``close``/``aclose``).
    """
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
