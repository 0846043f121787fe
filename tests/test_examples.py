"""The examples run: README's first command must never rot."""

from __future__ import annotations

import runpy
import sys

from pathlib import Path

import pytest
import structlog


EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, capsys, monkeypatch):
    """Each example runs to completion and exits 0."""
    monkeypatch.setattr(sys, "argv", [str(path)])
    try:
        with pytest.raises(SystemExit) as info:
            runpy.run_path(str(path), run_name="__main__")
    finally:
        structlog.reset_defaults()  # examples may configure structlog for their output
    assert 0 == info.value.code
    assert capsys.readouterr().out
