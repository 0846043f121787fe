"""
``python -m resilience status`` and ``dashboard``: the operator's view from a terminal.

``status`` reads a store's snapshot (a ``redis://`` URL, or ``http://`` for a process
serving ``resilience.dashboard.serve()``: its memory store and metrics) and prints it as a
table (open breakers first; coloured on a terminal, plain when piped) or as JSON. With
``--watch SECONDS`` it redraws the table in place (JSON: one document per line).
``dashboard`` serves the live page for a store until interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

from datetime import UTC, datetime
from typing import IO, Any, Final


__all__ = [
    "HOW_TO_POINT",
    "add_commands",
    "open_source",
    "render_table",
    "run_dashboard",
    "run_status",
]

HOW_TO_POINT: Final = """\
status needs a store to read: --store URL

  --store redis://host:6379/0      the Redis store your services share (add --namespace
                                   NAME if they use RedisStore(namespace=NAME), and
                                   --cluster if host is a node of a Redis Cluster, or
                                   --sentinel SERVICE if it is a Sentinel)
  --store http://127.0.0.1:8321    a process serving resilience.dashboard.serve(port=8321):
                                   its own memory store and its call metrics

A process's memory store lives inside that process only; to see it from here, start
resilience.dashboard.serve() in it (it binds 127.0.0.1) and point --store at it."""

_COLOURS: Final = {"open": "31;1", "half_open": "33;1", "closed": "32", "busy": "33", "dim": "2"}


def add_commands(commands: Any) -> None:
    """Add ``status`` and ``dashboard`` to the CLI's subcommands."""
    status = commands.add_parser("status", help="show a store's breakers, limiters and pools")
    _store_options(status)
    status.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS")
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.add_argument("--filter", metavar="PREFIX", help="only names and keys starting so")
    status.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the table: auto (a terminal without NO_COLOR), always, never",
    )
    dashboard = commands.add_parser("dashboard", help="serve a store's live page")
    _store_options(dashboard)
    dashboard.add_argument("--port", type=int, default=8321)
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: this machine only)"
    )


def _store_options(parser: Any) -> None:
    parser.add_argument("--store", metavar="URL", help="redis://... or http://host:port")
    parser.add_argument("--namespace", default="resilience", help="the RedisStore namespace")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for the store (default 2)"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the redis:// URL is a node of a Redis Cluster: read every primary",
    )
    parser.add_argument(
        "--sentinel",
        metavar="SERVICE",
        help="the redis:// URL is a Sentinel: read the primary it names for SERVICE",
    )


class _HttpSource:
    """A process's dashboard, read through its ``/snapshot.json``."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/snapshot.json"
        self.timeout = timeout

    def read(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as reply:
                data: dict[str, Any] = json.loads(reply.read())
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            msg = f"cannot read {self.url}: {reason}"
            raise ConnectionError(msg) from error
        if "error" in data:
            raise ConnectionError(str(data["error"]))
        return data

    def close(self) -> None:
        """Nothing to close."""


class _StoreSource:
    """A store read directly (``RedisStore``)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def read(self) -> dict[str, Any]:
        from resilience._errors import StoreUnavailableError  # noqa: PLC0415
        from resilience._snapshot import snapshot  # noqa: PLC0415

        try:
            return snapshot(self.store).to_dict()
        except StoreUnavailableError as error:
            msg = (
                f"cannot reach {self.store.describe()} within {self.store.timeout:g} s: "
                f"{error.__cause__ or error}"
            )
            raise ConnectionError(msg) from error

    def close(self) -> None:
        self.store.close()


def open_source(
    url: str,
    namespace: str,
    timeout: float,
    *,
    cluster: bool = False,
    sentinel: str | None = None,
) -> _HttpSource | _StoreSource:
    """Return something whose ``read()`` gives a snapshot's plain data, for *url*."""
    if cluster and sentinel is not None:
        msg = "--cluster and --sentinel name two kinds of Redis deployment: give one"
        raise ValueError(msg)
    if url.startswith(("http://", "https://")):
        if cluster or sentinel is not None:
            msg = "--cluster and --sentinel are for a redis:// store, not a process's page"
            raise ValueError(msg)
        return _HttpSource(url, timeout)
    if url.startswith(("redis://", "rediss://", "unix://")):
        import resilience  # noqa: F401, PLC0415 - registers every concern's Redis view

        from resilience.stores import RedisStore  # noqa: PLC0415

        if sentinel is not None:
            from resilience.stores import RedisStore  # noqa: PLC0415

            made = RedisStore.from_sentinel(url, sentinel, namespace=namespace, timeout=timeout)
            return _StoreSource(made)
        store = RedisStore(url, namespace=namespace, timeout=timeout, cluster=cluster)
        return _StoreSource(store)
    msg = f"--store must be a redis://, rediss://, unix:// or http:// URL, got {url!r}"
    raise ValueError(msg)


# -- the table -------------------------------------------------------------------------------


def _paint(enabled: bool) -> Any:
    def paint(text: str, what: str) -> str:
        code = _COLOURS.get(what)
        return f"\x1b[{code}m{text}\x1b[0m" if enabled and code else text

    return paint


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _rows(headers: list[str], rows: list[list[str]], states: list[str], paint: Any) -> list[str]:
    """Left-align the first column, pad every column to its widest cell, colour by state."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row, state in zip(rows, states, strict=True):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        if len(cells) > 1:
            cells[1] = paint(cells[1], state)
        lines.append("  ".join(cells).rstrip())
    return lines


def render_table(data: dict[str, Any], *, colour: bool = False) -> str:
    """Return the snapshot's plain data as the terminal table."""
    paint = _paint(colour)
    now = data["taken_at"]
    taken = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [f"resilience status: {data['store']} at {taken}", ""]
    breakers = data["breakers"]
    out.append(f"BREAKERS ({len(breakers)})")
    if breakers:
        rows = []
        for b in breakers:
            if b["failure_rate_threshold"] is not None:
                rate = "-" if b["failure_rate"] is None else f"{b['failure_rate']:.0%}"
                fails = f"{rate} of {b['window_calls']}"
            else:
                fails = f"{b['consecutive_failures']}/{b['failure_threshold']}"
            since = "-" if b["since"] is None else _seconds(now - b["since"]) + " ago"
            probe = _seconds(b["next_probe_in"]) if b["state"] == "open" else "-"
            rows.append(
                [
                    b["name"],
                    b["state"].upper(),
                    since,
                    fails,
                    probe,
                    str(b["rejected"]),
                    b["reason"],
                ]
            )
        headers = ["NAME", "STATE", "SINCE", "FAILURES", "NEXT PROBE", "REJECTED", "REASON"]
        out += _rows(headers, rows, [b["state"] for b in breakers], paint)
    limiters = data["limiters"]
    out += ["", f"RATE LIMITERS ({len(limiters)})"]
    if limiters:
        rows, states = [], []
        for r in limiters:
            state = "window" if r["window_remaining"] else "saturated" if r["saturated"] else "ok"
            rate = "-" if r["rate"] is None else f"{r['rate']}/{r['per']:g}s"
            starts = str(r["starts"]) if r["rate"] is None else f"{r['starts']}/{r['rate']}"
            window = "-"
            if r["window_remaining"]:
                until = datetime.fromtimestamp(r["window_ends_at"], UTC).strftime("%H:%M:%S")
                window = f"{_seconds(r['window_remaining'])} (until {until} UTC)"
            rows.append([r["key"], state.upper(), rate, starts, str(r["waiting"]), window])
            states.append("busy" if r["saturated"] else "closed")
        headers = ["KEY", "STATE", "RATE", "STARTS", "WAITING", "BACKOFF WINDOW"]
        out += _rows(headers, rows, states, paint)
    pools = data["pools"]
    out += ["", f"POOLS ({len(pools)})"]
    if pools:
        rows, states = [], []
        for p in pools:
            limit = p["live_limit"] if p["live_limit"] is not None else p["limit"]
            full = limit is not None and p["in_use"] >= limit
            waiting = "n/a" if p["waiting"] is None else str(p["waiting"])
            holders = ", ".join(f"{k} ({v})" for k, v in (p["holders"] or {}).items()) or "-"
            rows.append(
                [
                    p["key"],
                    "FULL" if full else "OK",
                    f"{p['in_use']}/{'?' if limit is None else limit}",
                    waiting,
                    (">=" if p.get("oldest_lease_at_least") else "") + _seconds(p["oldest_lease"]),
                    holders,
                ]
            )
            states.append("busy" if full or p["waiting"] else "closed")
        headers = ["KEY", "STATE", "IN USE", "WAITING", "OLDEST LEASE", "HOLDERS"]
        out += _rows(headers, rows, states, paint)
    budgets = data["budgets"]
    out += ["", f"RETRY BUDGETS AND QUOTAS ({len(budgets)})"]
    if budgets:
        rows, states = [], []
        for u in budgets:
            quota = u["ratio"] is None and u["window"] is None and u["balance"] is not None
            left = "?" if u["balance"] is None else f"{u['balance']:.1f}"
            left += " tokens" if quota else " retries"
            spent = u["balance"] is not None and u["balance"] < 1
            calls, retries = ("-", "-") if quota else (str(u["calls"]), str(u["retries"]))
            rows.append([u["key"], "SPENT" if spent else "OK", left, calls, retries])
            states.append("open" if spent else "closed")
        out += _rows(["KEY", "STATE", "LEFT", "CALLS", "RETRIES"], rows, states, paint)
    throttles = data.get("throttles") or []
    out += ["", f"THROTTLES ({len(throttles)})"]
    if throttles:
        rows, states = [], []
        for t in throttles:
            refusing = t["probability"] > 0
            k = "?" if t["k"] is None else f"{t['k']:g}"
            window = _seconds(t["window"])
            rows.append(
                [
                    t["key"],
                    "REFUSING" if refusing else "OK",
                    f"{t['probability']:.0%}",
                    f"{t['accepts']}/{t['requests']}",
                    f"k={k} over {window}",
                ]
            )
            states.append("open" if refusing else "closed")
        headers = ["KEY", "STATE", "REFUSED NOW", "ACCEPTED", "POLICY"]
        out += _rows(headers, rows, states, paint)
    metrics = data.get("metrics")
    if metrics is not None:
        out += ["", f"CALLS ({len(metrics)} names, rolling window)"]
        if metrics:
            rows = [
                [
                    m["name"],
                    str(m["calls"]),
                    str(m["failures"]),
                    str(m["retries"]),
                    str(m["give_ups"]),
                    str(m["rejections"]),
                    _seconds(m["p50"]),
                    _seconds(m["p99"]),
                ]
                for m in metrics
            ]
            headers = ["NAME", "CALLS", "FAILURES", "RETRIES", "GIVE-UPS", "REJECTED", "P50", "P99"]
            out += _rows(headers, rows, ["dim"] * len(rows), _paint(False))
    return "\n".join(out)


def _filtered(data: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    if not prefix:
        return data
    out = dict(data)
    for part, field in (("breakers", "name"), ("limiters", "key"), ("pools", "key")):
        out[part] = [x for x in data[part] if x[field].startswith(prefix)]
    for part in ("budgets", "throttles"):
        out[part] = [x for x in data.get(part) or [] if x["key"].startswith(prefix)]
    if data.get("metrics") is not None:
        out["metrics"] = [m for m in data["metrics"] if m["name"].startswith(prefix)]
    return out


def _wants_colour(choice: str, stream: IO[str]) -> bool:
    if choice != "auto":
        return choice == "always"
    term = os.environ.get("TERM", "")
    return stream.isatty() and "NO_COLOR" not in os.environ and term not in ("", "dumb")


def _source_of(args: Any) -> _HttpSource | _StoreSource:
    """``open_source`` for the parsed ``--store`` options of ``status`` and ``dashboard``."""
    return open_source(
        args.store, args.namespace, args.timeout, cluster=args.cluster, sentinel=args.sentinel
    )


def run_status(args: Any, out: IO[str] | None = None) -> int:
    """Run ``status``; return the exit status."""
    stream = out or sys.stdout
    if not args.store:
        print(HOW_TO_POINT, file=sys.stderr)
        return 2
    if args.watch is not None and args.watch <= 0:
        print("error: --watch must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        source = _source_of(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    colour = _wants_colour(args.color, stream)
    in_place = args.watch is not None and stream.isatty() and args.format == "table"
    try:
        while True:
            try:
                data = _filtered(source.read(), args.filter)
            except ConnectionError as error:
                print(f"error: {error}", file=sys.stderr)
                if args.watch is None:
                    return 1
                time.sleep(args.watch)
                continue
            if args.format == "json":
                text = json.dumps(data, indent=None if args.watch is not None else 2)
            else:
                text = render_table(data, colour=colour)
            if in_place:
                # Home, draw, clear what is left of the last frame: no flicker, no scrolling.
                lines = text.split("\n")
                stream.write("\x1b[H" + "\x1b[K\n".join(lines) + "\x1b[K\n\x1b[J")
            else:
                stream.write(text + "\n")
            stream.flush()
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        source.close()


def run_dashboard(args: Any) -> int:
    """Run ``dashboard``: serve the store's page until interrupted; return the exit status."""
    if not args.store or not args.store.startswith(("redis://", "rediss://", "unix://")):
        print(
            "dashboard needs --store redis://host:6379/0 (the store your services share).\n"
            "For a process's own memory store, call resilience.dashboard.serve(port=8321) "
            "inside it instead.",
            file=sys.stderr,
        )
        return 2
    from resilience.dashboard import serve  # noqa: PLC0415

    try:
        source = _source_of(args)
        assert isinstance(source, _StoreSource)
        source.read()  # fail now, clearly, when the store cannot be reached
        page = serve(args.port, host=args.host, store=source.store, metrics=False)
    except (ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"serving {source.store.describe()} at {page.url} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        page.stop()
        source.close()
