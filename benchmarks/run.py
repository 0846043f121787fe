"""
Run every benchmark scenario in one process and write a markdown report.

    python -m benchmarks.run                  # everything; writes benchmarks/results/latest.md
    python -m benchmarks.run --quick          # fewer, shorter repeats; prints only
    python -m benchmarks.run --only retry     # modules or scenario titles containing "retry"
    python -m benchmarks.run --check          # also exit 1 when a performance target fails

Scenarios come from ``benchmarks/bench_*.py`` (``scenarios()``, and optionally ``targets()``).
Each scenario's contenders are timed round-robin, repeat after repeat, with loop counts
calibrated to about ``--time`` seconds per measurement; the report gives the median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import pathlib
import statistics
import sys
import time
import traceback

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._harness import (
    Measurement,
    Scenario,
    Target,
    calibrate,
    close_event_loop,
    collect_garbage,
    loop_overhead,
    machine_info,
    measure,
)


HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "latest.md"
OURS = "resilience"


@dataclass
class Outcome:
    """A scenario and what measuring it gave."""

    scenario: Scenario
    module: str
    rows: list[Measurement] = field(default_factory=list)

    def median(self, label: str) -> float | None:
        for row in self.rows:
            if row.label == label:
                return row.median
        return None

    def ratio(self, label: str, versus: str) -> float | None:
        """*label*'s cost over *versus*'s: of the medians, or paired (see ``Scenario.rounds``)."""
        if self.scenario.rounds is None:
            mine, theirs = self.median(label), self.median(versus)
            return mine / theirs if mine is not None and theirs else None
        rows = {row.label: row.per_call for row in self.rows}
        pairs = list(zip(rows.get(label, ()), rows.get(versus, ()), strict=False))
        if not pairs or not all(theirs for _, theirs in pairs):
            return None
        return statistics.median(mine / theirs for mine, theirs in pairs)


@dataclass
class Plan:
    """What discovery found: scenarios to run, targets to check, modules that were skipped."""

    scenarios: list[tuple[str, Scenario]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: ``reports()`` of the selected modules: extra markdown sections (accuracy tables...).
    reports: list[tuple[str, Any]] = field(default_factory=list)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 120 else text[:117] + "..."


def discover(only: Sequence[str]) -> Plan:
    """Import ``bench_*.py`` modules and keep the scenarios that *only* selects (all if empty)."""
    plan = Plan()
    wanted = [w.lower() for w in only]
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        module_selected = not wanted or any(w in name.lower() for w in wanted)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            scenarios: list[Scenario] = list(module.scenarios())
            targets: list[Target] = list(getattr(module, "targets", list)())
        except Exception as exc:
            if module_selected:
                plan.skipped.append(f"`{name}`: could not load ({_error_text(exc)})")
            continue
        notes: list[str] = list(getattr(module, "SKIPPED", []))
        kept = [
            s for s in scenarios if module_selected or any(w in s.title.lower() for w in wanted)
        ]
        if module_selected or kept:
            plan.skipped.extend(f"`{name}`: {note}" for note in notes)
        if module_selected and hasattr(module, "reports"):
            plan.reports.append((name, module.reports))
        plan.scenarios.extend((name, s) for s in kept)
        plan.targets.extend(targets)
    return plan


def run_scenario(module: str, scenario: Scenario, repeats: int, target: float) -> Outcome:
    """Run *scenario* between its setup and teardown (if it has them)."""
    from resilience.telemetry._bus import BUS

    before = list(BUS.subs)
    teardown = scenario.setup() if scenario.setup is not None else None
    try:
        if scenario.rounds is not None:
            outcome = Outcome(scenario, module)
            outcome.rows = scenario.rounds(max(repeats, scenario.repeats))
            return outcome
        return _run_scenario(module, scenario, repeats, target)
    finally:
        if teardown is not None:
            teardown()
        if list(BUS.subs) != before:
            # A handler left attached would make every later scenario pay for a listener.
            msg = f"benchmark scenario {scenario.title!r} left a telemetry handler attached"
            raise RuntimeError(msg)


def _run_scenario(module: str, scenario: Scenario, repeats: int, target: float) -> Outcome:
    """Calibrate each contender, then time them round-robin *repeats* times."""
    outcome = Outcome(scenario, module)
    live: list[tuple[Measurement, Any]] = []
    for label, func in scenario.contenders.items():
        row = Measurement(label)
        outcome.rows.append(row)
        if func is None:
            row.skipped = "not installed"
            continue
        try:
            collect_garbage()
            row.loops = calibrate(scenario.kind, func, target)
        except Exception as exc:
            row.error = _error_text(exc)
            continue
        live.append((row, func))
    clock = time.process_time if scenario.timer == "process" else time.perf_counter
    for repeat in range(max(repeats, scenario.repeats)):
        # Rotate the order each repeat so no contender always runs first (or last).
        shift = repeat % len(live) if live else 0
        for row, func in live[shift:] + live[:shift]:
            if row.error is not None:
                continue
            try:
                collect_garbage()
                elapsed = measure(scenario.kind, func, row.loops, clock)
            except Exception as exc:
                row.error = _error_text(exc)
                continue
            row.per_call.append(elapsed / row.loops)
    return outcome


# -- formatting ---------------------------------------------------------------------------


def _ns(seconds: float) -> str:
    ns = seconds * 1e9
    return f"{ns:,.1f}" if ns < 100 else f"{ns:,.0f}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    ratio = value / reference
    if ratio < 10:
        return f"{ratio:.2f}x"
    if ratio < 100:
        return f"{ratio:.1f}x"
    return f"{ratio:,.0f}x"


def _paired(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.4f}x"


def table(outcome: Outcome) -> str:
    """The markdown table of one scenario."""
    scenario = outcome.scenario
    base = outcome.median(scenario.baseline)
    ours = outcome.median(OURS)
    paired = " (paired)" if scenario.rounds is not None else ""
    lines = [
        f"### {scenario.title}",
        "",
        f"{scenario.note} ({scenario.kind}; `benchmarks/{outcome.module}.py`)"
        if scenario.note
        else f"({scenario.kind}; `benchmarks/{outcome.module}.py`)",
        "",
        f"| contender | ns/call (median) | vs {scenario.baseline}{paired} | vs {OURS}{paired} "
        "| spread | loops |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in outcome.rows:
        label = f"**{row.label}**" if row.label == OURS else row.label
        if row.skipped is not None:
            lines.append(f"| {label} | skipped: {row.skipped} | | | | |")
        elif row.error is not None and row.median is None:
            lines.append(f"| {label} | error: `{row.error}` | | | | |")
        else:
            med = row.median
            assert med is not None
            spread = row.spread
            spread_text = f"{spread:.0%}" if spread is not None else "-"
            if row.error is not None:
                spread_text += f" (then error: `{row.error}`)"
            versus_base, versus_ours = _ratio(med, base), _ratio(med, ours)
            if scenario.rounds is not None:  # paired: the median of the per-round ratios
                versus_base = _paired(outcome.ratio(row.label, scenario.baseline))
                versus_ours = _paired(outcome.ratio(row.label, OURS))
            lines.append(
                f"| {label} | {_ns(med)} | {versus_base} | {versus_ours} "
                f"| {spread_text} | {row.loops:,} |"
            )
    return "\n".join(lines)


@dataclass
class Verdict:
    target: Target
    ratio: float | None
    status: str  # "pass", "FAIL", "not run"


def evaluate(targets: Sequence[Target], outcomes: Sequence[Outcome]) -> list[Verdict]:
    """Judge each target against the medians of the scenario it names."""
    by_title = {o.scenario.title: o for o in outcomes}
    verdicts = []
    for target in targets:
        outcome = by_title.get(target.scenario)
        if outcome is None:
            verdicts.append(Verdict(target, None, "not run"))
            continue
        ratio = outcome.ratio(target.contender, target.versus)
        if ratio is None:
            verdicts.append(Verdict(target, None, "FAIL"))
            continue
        verdicts.append(Verdict(target, ratio, "pass" if ratio <= target.at_most else "FAIL"))
    return verdicts


def _limit(at_most: float) -> str:
    return f"<= 1/{1 / at_most:g}" if at_most < 1 else f"<= {at_most:g}x"


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    lines = [
        "| scenario | claim | measured | limit | result |",
        "|---|---|---:|---:|---|",
    ]
    for v in verdicts:
        t = v.target
        measured = "-" if v.ratio is None else f"{v.ratio:.3f}x"
        if v.ratio is not None and v.ratio < 1:
            measured += f" (1/{1 / v.ratio:.1f})"
        claim = t.claim or f"{t.contender} vs {t.versus}"
        lines.append(f"| {t.scenario} | {claim} | {measured} | {_limit(t.at_most)} | {v.status} |")
    return "\n".join(lines)


def report(
    outcomes: Sequence[Outcome],
    verdicts: Sequence[Verdict],
    plan: Plan,
    info: dict[str, str],
    overhead: float,
    argv: Sequence[str],
    repeats: int,
    target_time: float,
    elapsed: float,
) -> str:
    """The whole markdown document."""
    command = " ".join(["python -m benchmarks.run", *argv])
    parts = [
        "# Benchmark results",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `{command}` "
        f"in {elapsed:.0f} s: {repeats} interleaved repeats per contender, "
        f"loop counts calibrated to about {target_time * 1000:.0f} ms per measurement, "
        "median reported. See `benchmarks/README.md` for how to read it.",
        "",
        *(f"- **{key}**: {value}" for key, value in info.items()),
        f"- **floor** (timing loop + calling an empty function): {overhead * 1e9:.1f} ns/call",
        "",
        "Columns: `vs <baseline>` = median / the baseline's median; `vs resilience` = median / "
        "ours (above 1: slower than ours); `spread` = (max - min) / median over the repeats.",
        "",
    ]
    if verdicts:
        parts += ["## Targets", "", verdict_table(verdicts), ""]
    current = None
    for outcome in outcomes:
        if outcome.module != current:
            current = outcome.module
            parts += [f"## {current.removeprefix('bench_')}", ""]
        parts += [table(outcome), ""]
    if plan.skipped:
        parts += ["## Skipped", "", *(f"- {s}" for s in plan.skipped), ""]
    return "\n".join(parts)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="run modules or scenario titles containing SUBSTRING (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="3 short repeats: a smoke run")
    parser.add_argument("--repeats", type=int, help="repeats per contender (default 7; quick 3)")
    parser.add_argument(
        "--time",
        type=float,
        dest="target_time",
        help="seconds per measurement (default 0.075; quick 0.015)",
    )
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        help=f"markdown file to write (default: {DEFAULT_OUTPUT.relative_to(HERE.parent)} "
        "for a full run; partial and quick runs only print unless given)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a performance target fails"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    target_time = args.target_time or (0.015 if args.quick else 0.075)
    plan = discover(args.only)
    if args.list:
        for module, scenario in plan.scenarios:
            print(f"{module}: {scenario.title} ({scenario.kind}, {len(scenario.contenders)})")
        for skipped in plan.skipped:
            print(f"skipped {skipped}")
        return 0
    started = time.perf_counter()
    info = machine_info()
    overhead = loop_overhead()
    outcomes = []
    try:
        for module, scenario in plan.scenarios:
            print(f"[{time.perf_counter() - started:5.1f}s] {scenario.title}", file=sys.stderr)
            try:
                outcomes.append(run_scenario(module, scenario, repeats, target_time))
            except Exception:  # the harness itself broke: say so, keep the others
                traceback.print_exc()
                plan.skipped.append(f"`{module}`: scenario {scenario.title!r} crashed the harness")
    finally:
        close_event_loop()
    sections = []
    for module, make in plan.reports:
        print(f"[{time.perf_counter() - started:5.1f}s] {module}: extra report", file=sys.stderr)
        try:
            sections.extend(make())
        except Exception as exc:
            plan.skipped.append(f"`{module}`: report failed ({_error_text(exc)})")
    verdicts = evaluate(plan.targets, outcomes)
    text = report(
        outcomes,
        verdicts,
        plan,
        info,
        overhead,
        argv,
        repeats,
        target_time,
        time.perf_counter() - started,
    )
    if sections:
        text = text.rstrip("\n") + "\n\n" + "\n\n".join(sections) + "\n"
    print(text)
    output = args.output
    if output is None and not (args.quick or args.only or args.repeats or args.target_time):
        output = DEFAULT_OUTPUT
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    failed = [v for v in verdicts if v.status == "FAIL"]
    if args.check:
        judged = [v for v in verdicts if v.status != "not run"]
        print(
            f"check: {len(judged) - len(failed)} of {len(judged)} targets hold"
            + (
                f"; FAILED: {', '.join(v.target.claim or v.target.scenario for v in failed)}"
                if failed
                else ""
            ),
            file=sys.stderr,
        )
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
