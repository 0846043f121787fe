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
