"""Every ```python snippet in README.md and docs/ runs (illustrations use ```text)."""

from __future__ import annotations

import re

from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _snippets() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for number, match in enumerate(FENCE.finditer(path.read_text(encoding="utf-8")), 1):
            found.append((f"{path.relative_to(ROOT)}#{number}", match.group(1)))
    return found


SNIPPETS = _snippets()


def _servers_for(
    code: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snippets that name a cluster, Sentinel or TLS server get real ones of our own."""
    if "REDIS_" not in code:
        return
    servers = request.getfixturevalue("redis_servers")
    if "REDIS_CLUSTER_URL" in code:
        monkeypatch.setenv("REDIS_CLUSTER_URL", f"redis://127.0.0.1:{servers.cluster()[0].port}")
    if "REDIS_SENTINEL_PORT" in code:
        monkeypatch.setenv("REDIS_SENTINEL_PORT", str(servers.sentinel()[2].port))
    if "REDIS_TLS_PORT" in code:
        port, ca = servers.tls()
        monkeypatch.setenv("REDIS_TLS_PORT", str(port))
        monkeypatch.setenv("REDIS_TLS_CA", ca)


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_runs(where, code, clock, request, monkeypatch):
    """The snippet executes without error (with virtual time installed)."""
    _servers_for(code, request, monkeypatch)
    exec(compile(code, where, "exec"), {"__name__": f"docs_{where}"})
