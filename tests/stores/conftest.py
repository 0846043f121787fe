"""The fault tests' servers: one cluster (with replicas) and one Sentinel pair per worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..redis_servers import Servers


@pytest.fixture(name="servers", scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Servers the fault tests may kill, pause, flush and fail over (never the shared one)."""
    servers = Servers(tmp_path_factory.mktemp("faults"))
    yield servers
    servers.stop()
