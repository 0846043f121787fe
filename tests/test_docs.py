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


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_runs(where, code, clock):
    """The snippet executes without error (with virtual time installed)."""
    exec(compile(code, where, "exec"), {"__name__": f"docs_{where}"})
