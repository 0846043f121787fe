"""Packaging: the public surface and the version."""

from __future__ import annotations

import importlib.metadata
import types

import pytest

import resilience


def test_all_is_sorted_and_complete():
    """__all__ lists exactly the public names, sorted."""
    public = {
        name
        for name, value in vars(resilience).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert sorted(resilience.__all__) == resilience.__all__
    assert public == set(resilience.__all__)


def test_version_from_metadata(recwarn):
    """__version__ comes from the installed metadata, without warnings."""
    assert importlib.metadata.version("resilience") == resilience.__version__
    assert [] == list(recwarn)


def test_unknown_attribute():
    """Other unknown names raise AttributeError."""
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        resilience.nope


def test_py_typed_shipped():
    """The PEP 561 marker is part of the package."""
    from importlib.resources import files

    assert files("resilience").joinpath("py.typed").is_file()


PUBLIC_MODULES = [
    "resilience",
    "resilience.chaos",
    "resilience.dashboard",
    "resilience.http",
    "resilience.presets",
    "resilience.stores",
    "resilience.telemetry",
    "resilience.telemetry.otel",
    "resilience.testing",
    "resilience.transport",
    "resilience.transport_httpx2",
    "resilience.typing",
]


def _exported(module_name):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type | types.FunctionType):
            yield name, value


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_exports_name_their_public_module(module_name):
    """Every exported class and function says the module users import it from."""
    wrong = {
        name: value.__module__
        for name, value in _exported(module_name)
        if value.__module__ != module_name
    }
    assert {} == wrong


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_exported_classes_pickle_by_their_public_name(module_name):
    """A class pickles as ``<public module>.<name>`` and loads back as itself."""
    import pickle

    for _, value in _exported(module_name):
        if isinstance(value, type):
            assert value is pickle.loads(pickle.dumps(value))


def test_type_hints_still_resolve_in_the_defining_module():
    """Renamed classes keep their string annotations resolvable by typing.get_type_hints."""
    import typing

    hints = typing.get_type_hints(resilience.RetryPolicy)
    assert resilience.Backoff is hints["backoff"]
    budgets = resilience.RetryBudget | resilience.RetryQuota | resilience.RetryThrottle
    assert budgets | None == hints["budget"]
    assert int is typing.get_type_hints(resilience.CircuitBreakerPolicy)["failure_threshold"]
    from datetime import timedelta

    assert float | timedelta | None == typing.get_type_hints(resilience.BoundedPolicy)["timeout"]
    assert "resilience.RetryPolicy" == f"{resilience.RetryPolicy.__module__}.RetryPolicy"


def test_no_private_module_names_itself_public_by_hand():
    """``__module__`` is set by the publishing loop, not written into class bodies."""
    from pathlib import Path

    root = Path(resilience.__file__).parent
    by_hand = sorted(
        str(path.relative_to(root))
        for path in root.rglob("_*.py")
        if path.parent.name != "stores" and '    __module__ = "resilience' in path.read_text()
    )
    assert [] == by_hand


def test_the_wheel_ships_the_dashboard_page(tmp_path):
    """The live page's HTML and script are package data inside the built wheel."""
    import subprocess
    import sys
    import zipfile

    from pathlib import Path

    pytest.importorskip("hatchling", reason="the dev extra installs hatchling to build wheels")
    root = Path(__file__).parent.parent
    command = [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps"]
    subprocess.run(
        [*command, "--no-build-isolation", "-w", str(tmp_path), "-q"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("resilience-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "resilience/dashboard/static/index.html",
        "resilience/dashboard/static/dashboard.js",
    } <= names
