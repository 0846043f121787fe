"""
Tail-latency study: what ``@hedged(delay=<p95>)`` does to a server with a heavy tail.

    python -m benchmarks.hedging                 # 10,000 requests each way, chart + report
    python -m benchmarks.hedging --requests 2000 --no-chart

A loopback HTTP server (its own process, forked, a bare asyncio protocol so it costs the
client's core little) answers each request after a latency drawn around a small median (1 ms,
or the client's own round-trip p95 when that is larger, so the tail stands out of the
machine's noise); a share of the answers (2%) takes 20x the median. The client sends the same number of requests through one
``httpx.AsyncClient`` at a fixed concurrency, first plain, then through
``@hedged(delay=p95)``, the p95 being the one measured on the plain run. It reports
p50/p95/p99/p99.9 of both, the extra load (attempts sent per logical request, minus one)
and the target: p99 at most 0.5x the plain p99 for at most 10% extra requests. The chart
(the latency percentiles of both runs) goes to ``benchmarks/results/hedging.png``, the
numbers to ``benchmarks/results/hedging.md``.

What sets the run time on a loaded machine is the client's CPU per request (httpx and the
loopback syscalls), which also sets the round trip and so the median: 200 warm-up requests
before each run (not 10% of them) and a server that parses nothing it need not (so it
takes little of the client's core) cut what can be cut without changing the study.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pathlib
import random
import statistics
import sys
import time

from collections.abc import Awaitable, Callable

import httpx

from resilience import hedged


HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"

# -- the server ------------------------------------------------------------------------------


class _Latency(asyncio.Protocol):
    """One keep-alive connection: each request is answered after a drawn latency."""

    def __init__(self, rng: random.Random, tail: float, slow: float) -> None:
        self.rng, self.tail, self.slow = rng, tail, slow
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            path = head.split(b" ", 2)[1]
            latency = 0.0
            if path.startswith(b"/median/"):  # the latency asked for
                base = float(path.split(b"/")[2])
                latency = base * (0.8 + 0.4 * self.rng.random())
                if self.rng.random() < self.tail:
                    latency *= self.slow
            loop.call_later(latency, self.answer)

    def answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _serve(port_out: multiprocessing.Queue[int], tail: float, slow: float, seed: int) -> None:  # type: ignore[type-arg]
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Latency(rng, tail, slow), "127.0.0.1", 0, backlog=1024
    )
    port_out.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _server_main(port_out: multiprocessing.Queue[int], tail: float, slow: float, seed: int) -> None:  # type: ignore[type-arg]
    asyncio.run(_serve(port_out, tail, slow, seed))


# -- the client ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], share: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


async def _drive(
    call: Callable[[], Awaitable[object]], requests: int, concurrency: int
) -> list[float]:
    latencies: list[float] = []
    remaining = [requests]
    clock = time.perf_counter

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            start = clock()
            await call()
            latencies.append(clock() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(latencies)


async def study(
    base: str, median: float | None, requests: int, concurrency: int, warmup: int
) -> tuple[list[float], list[float], float, int, float, float]:
    """
    Run both sides; return the plain and hedged latencies, the delay used, the attempts,
    the server median used and the bare round trip's p95.
    """
    limits = httpx.Limits(
        max_connections=concurrency * 3, max_keepalive_connections=concurrency * 3
    )
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        sent = [0]

        async def bare() -> int:
            response = await client.get(f"{base}/")
            return response.status_code

        # The machine's own noise: a server that answers at once, at the same concurrency.
        noise = percentile(await _drive(bare, warmup, concurrency), 0.95)
        if median is None:  # the tail must stand out of that noise for the study to mean anything
            median = max(0.001, round(noise, 3))
        url = f"{base}/median/{median}"

        async def fetch() -> int:
            sent[0] += 1
            response = await client.get(url)
            return response.status_code

        await _drive(fetch, warmup, concurrency)
        plain = await _drive(fetch, requests, concurrency)
        delay = percentile(plain, 0.95)
        hedged_fetch = hedged(delay=delay, max_hedged_attempts=1)(fetch)
        await _drive(hedged_fetch, warmup, concurrency)
        sent[0] = 0
        hedged_latencies = await _drive(hedged_fetch, requests, concurrency)
        return plain, hedged_latencies, delay, sent[0], median, noise


def _row(name: str, values: list[float]) -> str:
    cells = [percentile(values, p) * 1000 for p in (0.5, 0.95, 0.99, 0.999)]
    return f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {max(values) * 1000:.2f} |"


def _chart(
    plain: list[float], hedged_values: list[float], delay: float, path: pathlib.Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values, style in (
        ("plain", plain, "o-"),
        (f"@hedged(delay={delay * 1000:.2f} ms)", hedged_values, "s-"),
    ):
        ax.plot(
            [f"p{s * 100:g}" for s in shares],
            [percentile(values, s) * 1000 for s in shares],
            style,
            label=label,
        )
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_xlabel("percentile")
    ax.set_title("Loopback HTTP, 2% of answers 20x the median: hedging at p95")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--median",
        type=float,
        default=None,
        help="the server's median in seconds (default: 1 ms, or the client's own round-trip "
        "p95 when that is larger, so the tail stands out of the machine's noise)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests before each run")
    parser.add_argument("--tail", type=float, default=0.02, help="share of slow answers")
    parser.add_argument("--slow", type=float, default=20.0, help="slow answers: x the median")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS / "hedging.md")
    args = parser.parse_args(argv)

    # fork where there is one: the server starts at once instead of importing all of this again
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    ports: multiprocessing.Queue[int] = context.Queue()  # type: ignore[type-arg]
    server = context.Process(
        target=_server_main,
        args=(ports, args.tail, args.slow, args.seed),
        daemon=True,
    )
    server.start()
    try:
        port = ports.get(timeout=30)
        started = time.perf_counter()
        plain, hedged_values, delay, attempts, median, noise = asyncio.run(
            study(
                f"http://127.0.0.1:{port}",
                args.median,
                args.requests,
                args.concurrency,
                args.warmup,
            )
        )
        took = time.perf_counter() - started
    finally:
        server.terminate()
        server.join()

    extra = attempts / args.requests - 1.0
    ratio = percentile(hedged_values, 0.99) / percentile(plain, 0.99)
    met = ratio <= 0.5 and extra <= 0.10
    lines = [
        "# Tail-latency study: `@hedged(delay=<p95>)`",
        "",
        f"{args.requests:,} requests each way through one `httpx.AsyncClient`, {args.concurrency} at a time, "
        f"to a loopback server whose answers take {median * 1000:g} ms (x0.8 to x1.2), "
        f"{args.tail:.0%} of them {args.slow:g}x that (seed {args.seed}). Hedge delay: the plain "
        f"run's p95. Both runs ({args.warmup:,} warm-up requests before each) took {took:.1f} s in all. The machine's own round trip (a server answering "
        f"at once, same concurrency) had a p95 of {noise * 1000:.2f} ms.",
        "",
        "| run | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        _row("plain", plain),
        _row(f"hedged (delay {delay * 1000:.2f} ms)", hedged_values),
        "",
        f"- p99 hedged / plain: **{ratio:.2f}x** (target <= 0.5x)",
        f"- extra load: **{extra:.1%}** more requests sent (target <= 10%)",
        f"- mean: plain {statistics.fmean(plain) * 1000:.2f} ms, hedged {statistics.fmean(hedged_values) * 1000:.2f} ms",
        f"- target {'met' if met else 'NOT met'}",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_chart:
        chart = args.output.with_suffix(".png")
        _chart(plain, hedged_values, delay, chart)
        print(
            f"chart: {chart.relative_to(HERE.parent) if chart.is_relative_to(HERE.parent) else chart}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
