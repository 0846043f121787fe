"""python -m resilience: the schedule table from flags and policy files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resilience import Backoff, RetryPolicy
from resilience._cli import load_policy, main, schedule_rows


def test_default_table(capsys):
    """The default policy prints 9 retries of the Tinker schedule with their bands."""
    assert 0 == main(["schedule"])
    out = capsys.readouterr().out
    assert "0.375 - 0.500" in out
    assert 9 == sum(1 for line in out.splitlines() if line.strip().split(" ")[0].isdigit())


def test_json_rows_match_bounds(capsys):
    """JSON output carries each retry's exact Backoff.bounds."""
    assert 0 == main(["schedule", "--jitter", "full", "--attempts", "4", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    b = Backoff(jitter="full")
    assert [list(b.bounds(n)) for n in range(3)] == [[r["low"], r["high"]] for r in rows]


def test_timeout_marks_rows():
    """Rows whose cumulative wait may cross the timeout are marked."""
    rows = schedule_rows(RetryPolicy(attempts=6, timeout=5, backoff=Backoff(jitter="none")), 10)
    assert [False, False, False, True, True] == [r["past_timeout"] for r in rows]


def test_unbounded_attempts_use_rows():
    """attempts=None shows --rows rows."""
    assert 3 == len(schedule_rows(RetryPolicy(attempts=None), 3))


def test_toml_and_json_files(tmp_path):
    """Policy files may be TOML (with a [retry] table) or JSON, or a bare Backoff."""
    toml = tmp_path / "p.toml"
    toml.write_text('[retry]\nattempts = 3\n[retry.backoff]\nbase = 1.0\njitter = "none"\n')
    assert RetryPolicy(attempts=3, backoff=Backoff(base=1.0, jitter="none")) == load_policy(toml)
    bare = tmp_path / "b.json"
    bare.write_text('{"base": 2, "max": 4}')
    assert Backoff(base=2, max=4) == load_policy(bare).backoff


def test_bad_input_exits_2(tmp_path, capsys):
    """A bad value or file prints a named error and exits 2."""
    assert 2 == main(["schedule", "--base", "-1"])
    assert "Backoff.base must be >= 0" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text('{"atempts": 2}')
    assert 2 == main(["schedule", "--policy", str(bad)])
    assert "unknown RetryPolicy field(s): atempts" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["schedule", "--attempts", "2"]])
def test_module_entry_point(args):
    """`python -m resilience` runs as a module."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience", *args], capture_output=True, text=True, check=False
    )
    assert 0 == done.returncode
    assert "jitter band" in done.stdout
