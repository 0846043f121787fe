"""
A retried call, seen twice: as structlog lines, and as the batches a session reporter sends.

    python examples/telemetry.py

``@retry`` and ``@traced`` report on resilience's event bus. ``attach_structlog`` turns the
events into log lines (secrets redacted); a ``Reporter`` forwards them into batches for a
backend (here a function that prints them; ``HttpBackend(url)`` would POST them as JSON).
"""

from __future__ import annotations

import sys

import structlog

from resilience import Backoff, retry, traced
from resilience.telemetry import Batch, Reporter, attach_structlog


def main() -> int:
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)]
    )
    attach_structlog("resilience.retry", level="info")  # @traced logs its own lines

    batches: list[Batch] = []

    def backend(batch: Batch) -> None:
        batches.append(batch)

    reporter = Reporter(backend, forward="resilience.", flush_interval=60.0)
    calls = 0

    @traced("charge", attributes={"customer": "c-42", "api_key": "sk_live_secret"})
    @retry(attempts=3, backoff=Backoff(base=0.01), on=ConnectionError, name="charge")
    def charge(amount: int) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"payment gateway unreachable (try {calls})")
        return f"charged {amount}"

    print("structlog lines:")
    result = charge(42)
    reporter.close(timeout=5)  # drains: every event reaches the backend before exit

    print(f"\nresult: {result}")
    events = [event for batch in batches for event in batch.events]
    print(
        f"the reporter sent {len(batches)} batch(es) of session {reporter.session_id}, {len(events)} events:"
    )
    for event in events:
        data = event.get("event_data") or {}
        name = event.get("event_name") or event.get("event")
        metadata = data.get("metadata", {})
        shown = {k: metadata[k] for k in ("attempt", "customer", "api_key") if k in metadata}
        print(f"  {event.get('severity', ''):<7} {name:<36} {shown}")
    secret_leaked = any("sk_live_secret" in repr(batch.to_dict()) for batch in batches)
    print(f"API key in any batch: {secret_leaked}")
    return 1 if secret_leaked or result != "charged 42" else 0


if __name__ == "__main__":
    sys.exit(main())
