"""
``python -m resilience``: what a retry policy will do, and what a store holds right now.

    python -m resilience schedule --base 0.5 --max 10 --jitter factor --attempts 8
    python -m resilience schedule --policy retry.toml
    python -m resilience status --store redis://localhost:6379/0 --watch 2
    python -m resilience dashboard --store redis://localhost:6379/0 --port 8321

The table shows, retry by retry, the delay before jitter, the jitter band (the exact
``Backoff.bounds``), and the cumulative waiting time, marking where ``timeout`` would stop it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from resilience._backoff import JITTERS, STRATEGIES, Backoff
from resilience._policies import RetryPolicy
from resilience._status import add_commands, run_dashboard, run_status


__all__ = ["main"]

_BACKOFF_FIELDS = {f.name for f in fields(Backoff)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resilience", description=(__doc__ or "").split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    schedule = commands.add_parser("schedule", help="print a policy's backoff schedule as a table")
    schedule.add_argument(
        "--policy", type=Path, help="a JSON or TOML file with RetryPolicy or Backoff fields"
    )
    schedule.add_argument("--strategy", choices=STRATEGIES)
    schedule.add_argument("--base", type=float, help="first delay in seconds")
    schedule.add_argument("--max", type=float, help="cap in seconds")
    schedule.add_argument("--multiplier", type=float)
    schedule.add_argument("--jitter", choices=JITTERS)
    schedule.add_argument("--jitter-amount", type=float, dest="jitter_amount")
    schedule.add_argument("--attempts", type=int, help="calls in all (retries = attempts - 1)")
    schedule.add_argument("--timeout", type=float, help="overall deadline in seconds")
    schedule.add_argument(
        "--rows", type=int, default=12, help="rows to show when attempts is unbounded"
    )
    schedule.add_argument("--format", choices=("table", "json"), default="table")
    add_commands(commands)
    return parser


def load_policy(path: Path) -> RetryPolicy:
    """Read a RetryPolicy (or a bare Backoff) from a JSON or TOML file."""
    text = path.read_text(encoding="utf-8")
    data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    if not isinstance(data, Mapping):
        msg = f"{path}: expected a table/object of policy fields, got {type(data).__name__}"
        raise ValueError(msg)
    if "retry" in data and isinstance(data["retry"], Mapping):
        data = data["retry"]
    if data and set(data) <= _BACKOFF_FIELDS:
        return RetryPolicy(backoff=Backoff.from_dict(data))
    return RetryPolicy.from_dict(data)


def schedule_rows(policy: RetryPolicy, rows: int) -> list[dict[str, Any]]:
    """Return one row per retry: delay before jitter, band, cumulative band, past timeout."""
    backoff = policy.backoff
    retries = rows if policy.attempts is None else min(policy.attempts - 1, 1000)
    out: list[dict[str, Any]] = []
    low_total = high_total = 0.0
    for retry in range(retries):
        low, high = backoff.bounds(retry)
        low_total += low
        high_total += high
        nominal = None if backoff.strategy == "decorrelated" else backoff._capped(retry)
        timeout = policy.timeout
        out.append(
            {
                "retry": retry,
                "attempt": retry + 2,
                "delay": nominal,
                "low": low,
                "high": high,
                "total_low": low_total,
                "total_high": high_total,
                "past_timeout": timeout is not None and high_total > timeout,  # type: ignore[operator]
            }
        )
    return out


def _table(policy: RetryPolicy, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{policy.backoff!r}",
        f"attempts={policy.attempts!r} timeout={policy.timeout!r}",
        "",
        f"{'retry':>5}  {'attempt':>7}  {'delay':>9}  {'jitter band (s)':>21}  {'waited so far (s)':>23}",
    ]
    for row in rows:
        delay = "-" if row["delay"] is None else f"{row['delay']:.3f}"
        band = f"{row['low']:.3f} - {row['high']:.3f}"
        total = f"{row['total_low']:.3f} - {row['total_high']:.3f}"
        mark = "  <- may cross timeout: gives up" if row["past_timeout"] else ""
        lines.append(
            f"{row['retry']:>5}  {row['attempt']:>7}  {delay:>9}  {band:>21}  {total:>23}{mark}"
        )
    if not rows:
        lines.append("(no retries: attempts=1)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "status":
        return run_status(args)
    if args.command == "dashboard":
        return run_dashboard(args)
    try:
        policy = load_policy(args.policy) if args.policy else RetryPolicy()
        overrides = {
            name: getattr(args, name)
            for name in ("strategy", "base", "max", "multiplier", "jitter", "jitter_amount")
            if getattr(args, name) is not None
        }
        if overrides:
            policy = replace(policy, backoff=replace(policy.backoff, **overrides))
        if args.attempts is not None:
            policy = replace(policy, attempts=args.attempts)
        if args.timeout is not None:
            policy = replace(policy, timeout=args.timeout)
    except (ValueError, TypeError, OSError, tomllib.TOMLDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = schedule_rows(policy, args.rows)
    if args.format == "json":
        print(json.dumps({"policy": policy.backoff.to_dict(), "rows": rows}, indent=2))
    else:
        print(_table(policy, rows))
    return 0
