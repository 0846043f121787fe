"""Stores plug in: the core never imports a store's client library nor its Redis backends."""

from __future__ import annotations

import ast
import subprocess
import sys

from pathlib import Path

import pytest

import resilience

from resilience.stores import MemoryStore, RedisStore
from resilience.stores._registry import BackendRegistry


PACKAGE = Path(resilience.__file__).parent
CLIENT_LIBRARIES = {"redis", "valkey"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_store_side(module: str) -> bool:
    """A store's own modules, and each concern's Redis twin (``_rate.redis``...)."""
    parts = module.split(".")
    return parts[:2] == ["resilience", "stores"] or parts[-1].startswith("redis")


def _imports(path: Path, module: str) -> set[str]:
    """Every module *path* imports, at the top or inside a function, absolute names."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _forbidden(name: str) -> bool:
    parts = name.split(".")
    if parts[0] in CLIENT_LIBRARIES:
        return True
    return (
        parts[0] == "resilience"
        and _is_store_side(name)
        and any(part.startswith(("redis", "_redis", "valkey", "_valkey")) for part in parts[1:])
    )


def test_the_core_imports_no_store_client_nor_redis_backend():
    """Walk the import graph statically: only stores and Redis twins may know Redis."""
    offenders = []
    core = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _is_store_side(module):
            continue
        core += 1
        offenders.extend(
            f"{module} imports {name}"
            for name in sorted(_imports(path, module))
            if _forbidden(name)
        )
    assert core > 40  # the walk saw the core, not an empty tree
    assert [] == offenders


def test_the_walk_catches_what_it_forbids(tmp_path):
    """The checker itself: a lazy import of a Redis twin and of redis are both flagged."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "def f():\n"
        "    import redis.asyncio\n"
        "    from resilience._rate.redis import RedisRateBackend\n"
        "    from resilience.stores._redis import RedisStore\n"
        "    from resilience.stores._memory import MemoryStore\n"
    )
    flagged = sorted(name for name in _imports(sample, "resilience.x") if _forbidden(name))
    assert "redis.asyncio" in flagged
    assert "resilience._rate.redis" in flagged
    assert "resilience.stores._redis" in flagged
    assert not any("_memory" in name or name == "os" for name in flagged)


def test_import_resilience_loads_no_store_client_library():
    """A fresh interpreter: ``import resilience`` (and its stores) loads neither redis nor valkey."""
    code = (
        "import sys, resilience, resilience.stores, resilience.testing\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'valkey')"
        " or m.rpartition('.')[2].startswith('redis') and m.startswith('resilience._')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "[]" == out.stdout.strip()


@pytest.mark.parametrize("store", [MemoryStore, RedisStore])
def test_each_store_registers_every_concern(store: type[BackendRegistry]):
    """Both stores name an implementation of every concern's protocol; names resolve."""
    from resilience.stores._registry import resolve

    concerns = {"breaker", "rate", "window", "pool", "pool.queue", "budget"}
    table = vars(store)["_factories"]
    assert concerns <= set(table)
    for factory in table.values():
        assert callable(resolve(factory) if isinstance(factory, str) else factory)


def test_a_new_store_plugs_in_without_touching_a_concern():
    """A store class of its own registers a factory; decorators get its backends."""
    from resilience import RateLimitPolicy, rate_limited

    made = []

    class CountingStore(MemoryStore):
        pass

    def rate(key: str, policy: RateLimitPolicy, store: CountingStore) -> object:
        from resilience._rate.state import memory_rate

        made.append(key)
        return memory_rate(key, policy, store)

    CountingStore.register("rate", rate)
    store = CountingStore()

    @rate_limited(rate=5, per=1.0, key="k", store=store)
    def work() -> int:
        return 1

    assert 1 == work()
    assert ["k"] == made
    assert "k" in MemoryStore.keys(store, "rate")
