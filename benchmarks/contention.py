"""
The backoff contention study: N clients racing for one resource, with our ``Backoff``.

A re-run of the experiment in Marc Brooker's "Exponential Backoff And Jitter" (AWS
Architecture Blog, 2015), with each jitter strategy of ``resilience.Backoff``:

- N clients each must complete one write to a shared resource; all start at time 0.
- A write is optimistic: the client reads at ``t`` and commits at ``t + call``. The commit
  succeeds unless another client's write committed since the read (in ``(t, t + call]``);
  of commits at the very same instant, one wins. (A rule where *every* overlapping attempt
  fails would never finish without jitter, since lockstep clients would collide forever;
  first-committer-wins is what optimistic concurrency does, and what the study simulated.)
- A client that lost learns it at commit time, waits the next delay of its own
  ``Backoff.delays(rand)`` schedule, and tries again. Nobody gives up.
- Work is the total number of attempts (calls); time is when the last client succeeded.

Everything runs in virtual time, event by event (a heap of commit times), with one seeded
``random.Random`` per run, so a seed gives the same numbers on every machine. All
strategies share the default ``base`` and ``max`` of ``Backoff()`` (0.5 s and 10 s) and
differ only in jitter.

    python -m benchmarks.contention            # full sweep: CSV, and the PNG with matplotlib
    python -m benchmarks.contention --quick    # fewer N and seeds; prints the summary only
"""

from __future__ import annotations

import argparse
import csv
import heapq
import pathlib
import random
import statistics
import sys
import time

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from resilience import Backoff


__all__ = [
    "STRATEGIES",
    "Result",
    "Row",
    "simulate",
    "sweep",
]

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"

BASE = 0.5  # Backoff() defaults: the shared scale of every strategy
CAP = 10.0
CALL = 0.05  # seconds from a client's read to its commit

#: The strategies compared, by label: each a Backoff with the same base and cap.
STRATEGIES: dict[str, Backoff] = {
    "no jitter": Backoff(base=BASE, max=CAP, jitter="none"),
    "full jitter": Backoff(base=BASE, max=CAP, jitter="full"),
    "equal jitter": Backoff(base=BASE, max=CAP, jitter="equal"),
    "decorrelated jitter": Backoff(base=BASE, max=CAP, strategy="decorrelated"),
    "ours: factor jitter 25% (default)": Backoff(base=BASE, max=CAP),
}

FULL_NS = (1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
QUICK_NS = (1, 5, 10, 20, 50, 100)
FULL_SEEDS = 100
QUICK_SEEDS = 10


@dataclass(frozen=True)
class Result:
    """One run: total attempts and the virtual time at which the last client succeeded."""

    calls: int
    time: float


def simulate(backoff: Backoff, clients: int, seed: int, call: float = CALL) -> Result:
    """Run *clients* contending writers, each retrying by *backoff*, until all succeed."""
    rng = random.Random(seed)
    schedules: list[Iterator[float]] = [backoff.delays(rng.random) for _ in range(clients)]
    # (commit time, client): everybody reads at 0 and commits at `call`.
    pending = [(call, client) for client in range(clients)]
    heapq.heapify(pending)
    last_commit = -float("inf")
    calls = clients
    finished = 0.0
    pop, push = heapq.heappop, heapq.heappush
    while pending:
        commit, client = pop(pending)
        if last_commit > commit - call:  # someone committed since this client read
            retry_at = commit + next(schedules[client])
            push(pending, (retry_at + call, client))
            calls += 1
        else:
            last_commit = commit
            finished = commit
    return Result(calls, finished)


@dataclass(frozen=True)
class Row:
    """A strategy at one N, averaged over the seeds."""

    strategy: str
    clients: int
    seeds: int
    calls_mean: float
    calls_stdev: float
    time_mean: float
    time_stdev: float

    @property
    def calls_per_client(self) -> float:
        return self.calls_mean / self.clients


def sweep(
    ns: Sequence[int] = FULL_NS,
    seeds: int = FULL_SEEDS,
    strategies: dict[str, Backoff] | None = None,
    call: float = CALL,
    first_seed: int = 0,
) -> list[Row]:
    """Simulate every strategy at every N over *seeds* seeds (``first_seed`` and up)."""
    rows = []
    for label, backoff in (strategies or STRATEGIES).items():
        for n in ns:
            runs = [simulate(backoff, n, first_seed + s, call) for s in range(seeds)]
            calls = [float(r.calls) for r in runs]
            times = [r.time for r in runs]
            rows.append(
                Row(
                    label,
                    n,
                    seeds,
                    statistics.fmean(calls),
                    statistics.pstdev(calls),
                    statistics.fmean(times),
                    statistics.pstdev(times),
                )
            )
    return rows


# -- output ---------------------------------------------------------------------------------

FIELDS = (
    "strategy",
    "clients",
    "seeds",
    "calls_mean",
    "calls_stdev",
    "calls_per_client",
    "time_mean_s",
    "time_stdev_s",
)


def write_csv(rows: Sequence[Row], path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        for r in rows:
            writer.writerow(
                [
                    r.strategy,
                    r.clients,
                    r.seeds,
                    f"{r.calls_mean:.2f}",
                    f"{r.calls_stdev:.2f}",
                    f"{r.calls_per_client:.3f}",
                    f"{r.time_mean:.3f}",
                    f"{r.time_stdev:.3f}",
                ]
            )


def summary(rows: Sequence[Row]) -> str:
    """A markdown table: calls and time per strategy at a few N."""
    ns = sorted({r.clients for r in rows})
    shown = [n for n in ns if n in (1, 10, 20, 50, 100)] or ns
    by = {(r.strategy, r.clients): r for r in rows}
    labels = list(dict.fromkeys(r.strategy for r in rows))
    head = "| strategy | " + " | ".join(f"N={n} calls / time (s)" for n in shown) + " |"
    lines = [head, "|---|" + "---:|" * len(shown)]
    for label in labels:
        cells = []
        for n in shown:
            r = by.get((label, n))
            cells.append("-" if r is None else f"{r.calls_mean:,.0f} / {r.time_mean:,.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: pathlib.Path) -> bool:
    """Draw calls vs N and time vs N side by side; False when matplotlib is missing."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = list(dict.fromkeys(r.strategy for r in rows))
    styles: dict[str, tuple[str, str]] = {
        "no jitter": ("#d62728", "o"),
        "full jitter": ("#1f77b4", "s"),
        "equal jitter": ("#2ca02c", "^"),
        "decorrelated jitter": ("#9467bd", "D"),
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    for label in labels:
        mine = sorted((r for r in rows if r.strategy == label), key=lambda r: r.clients)
        xs = [r.clients for r in mine]
        color, marker = styles.get(label, ("#ff7f0e", "v"))
        kw: dict[str, object] = {
            "color": color,
            "marker": marker,
            "markersize": 4,
            "linewidth": 1.8,
            "label": label,
        }
        left.plot(xs, [r.calls_mean for r in mine], **kw)
        right.plot(xs, [r.time_mean for r in mine], **kw)
    seeds = rows[0].seeds if rows else 0
    left.set(
        title="Work: total calls until every client wrote",
        xlabel="contending clients (N)",
        ylabel="calls (mean, log scale)",
    )
    right.set(
        title="Time until the last client wrote",
        xlabel="contending clients (N)",
        ylabel="virtual seconds (mean, log scale)",
    )
    for ax in (left, right):
        ax.grid(visible=True, alpha=0.3)
        ax.set_xlim(left=0)
        ax.set_yscale("log")  # no jitter is an order of magnitude above the rest
    left.legend(frameon=False, fontsize=9)
    fig.suptitle(
        f"Exponential backoff with resilience.Backoff (base {BASE:g} s, cap {CAP:g} s, "
        f"call {CALL * 1000:g} ms; mean of {seeds} seeds)",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.contention", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer N and seeds; no files")
    parser.add_argument("--seeds", type=int, help=f"seeds per point (default {FULL_SEEDS})")
    parser.add_argument("--output-dir", type=pathlib.Path, default=None, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ns = QUICK_NS if args.quick else FULL_NS
    seeds = args.seeds or (QUICK_SEEDS if args.quick else FULL_SEEDS)
    rows = sweep(ns, seeds)
    print(summary(rows))
    print(f"\n{len(rows)} points in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.quick and args.output_dir is None:
        return 0
    out = args.output_dir or RESULTS
    write_csv(rows, out / "contention.csv")
    print(f"wrote {out / 'contention.csv'}", file=sys.stderr)
    if plot(rows, out / "contention.png"):
        print(f"wrote {out / 'contention.png'}", file=sys.stderr)
    else:
        print("matplotlib missing (pip install -e '.[plot]'): no chart", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
