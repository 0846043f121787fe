"""
A circuit breaker opening on a failing upstream, answering with a fallback, and recovering.

    python examples/breaker.py
"""

from __future__ import annotations

import sys
import time

from resilience import CircuitOpenError, circuit_breaker, get_circuit_breaker
from resilience.telemetry import attach


class UpstreamDownError(Exception):
    """What the fake upstream raises while it is down."""


upstream = {"healthy": False, "calls": 0}


@circuit_breaker(name="prices", failure_threshold=3, reset_timeout=0.05, on=UpstreamDownError)
def fetch_price(item: str) -> float:
    upstream["calls"] += 1
    if not upstream["healthy"]:
        raise UpstreamDownError(f"prices service is down (asked for {item})")
    return 9.99


@circuit_breaker(
    name="prices",
    failure_threshold=3,
    reset_timeout=0.05,
    on=UpstreamDownError,
    fallback=lambda exc: None,
)
def price_or_none(item: str) -> float | None:
    return fetch_price.__wrapped__(item)


def main() -> int:
    attach(
        lambda e: print(
            f"  event: {e.metadata['from']} -> {e.metadata['to']} ({e.metadata['reason']})"
        ),
        "resilience.breaker.state_change",
    )
    breaker = get_circuit_breaker("prices")

    print("1. the upstream fails; three failures in a row open the breaker")
    for _ in range(3):
        try:
            fetch_price("apple")
        except UpstreamDownError as exc:
            print(f"  failed: {exc}")

    print("2. open: calls are refused at once, without touching the upstream")
    before = upstream["calls"]
    try:
        fetch_price("apple")
    except CircuitOpenError as exc:
        print(f"  refused: {exc}")
    print(f"  with a fallback: {price_or_none('apple')!r}")
    assert before == upstream["calls"]

    print("3. the upstream recovers; after reset_timeout one probe call closes the breaker")
    upstream["healthy"] = True
    time.sleep(0.05)
    print(f"  state before the probe: {breaker.state}")
    print(f"  probe answered: {fetch_price('apple')}")
    print(f"  state: {breaker.state}; stats: {breaker.stats}")
    return 0 if breaker.state == "closed" else 1


if __name__ == "__main__":
    sys.exit(main())
