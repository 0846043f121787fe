"""``python -m resilience status`` in a real terminal (tmux), piped, and as JSON."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest

from resilience import RetryQuota, circuit_breaker, rate_limited, throttled

from .conftest import _redis_or_skip


REDIS = "redis://127.0.0.1:6379/0"


class Boom(Exception):
    """The failure of our fake upstream."""


def _tmux_or_skip() -> None:
    if shutil.which("tmux") is None:
        reason = "tmux is not installed; the terminal tests drive a real tmux pane"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs tmux: {reason}")
        pytest.skip(reason)


class Pane:
    """One tmux server of our own (its own socket) running one command in a 140x50 pane."""

    def __init__(self, command: str) -> None:
        self.socket = f"resilience-test-{uuid.uuid4().hex[:10]}"
        self._tmux(
            "new-session", "-d", "-x", "140", "-y", "50", f"{command}; echo EXIT=$?; sleep 60"
        )

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def screen(self, escapes: bool = False) -> str:
        """What the pane shows now (with colour escapes if asked)."""
        return self._tmux("capture-pane", "-p", *(["-e"] if escapes else []))

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """The screen once it shows *text*."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                pytest.fail(f"the pane never showed {text!r}; it shows:\n{shown}")
            time.sleep(0.05)

    def keys(self, *keys: str) -> None:
        """Type *keys* into the pane."""
        self._tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def _cli(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "resilience", *args))


@pytest.fixture(name="fleet")
def _fleet():
    """A Redis namespace with an open breaker, a closed one and a busy limiter."""
    from resilience.stores import RedisStore

    _redis_or_skip()
    _tmux_or_skip()
    store = RedisStore(REDIS, namespace=f"test-status-{uuid.uuid4().hex[:10]}")

    @circuit_breaker(
        store=store, name="payments-api", failure_threshold=1, reset_timeout=300, on=Boom
    )
    def pay():
        raise Boom

    @circuit_breaker(store=store, name="search-api", failure_threshold=3, on=Boom)
    def search():
        return "ok"

    with pytest.raises(Boom):
        pay()
    search()
    limited = rate_limited(rate=2, per=60.0, key="api.example.com", store=store)(lambda: "ok")
    limited()
    limited()
    RetryQuota(capacity=100, key="aws-quota", store=store).backend().step(10, 10, 0)
    refusing = throttled(k=1.0, window=60.0, on=Boom, key="pay-throttle", store=store)

    @refusing
    def refused():
        raise Boom

    with pytest.raises(Boom):
        refused()
    store._meta.settle()
    yield store
    store.clear()
    store.close()


def test_the_table_in_a_terminal(fleet):
    """A terminal gets the table, open breakers first, coloured."""
    pane = Pane(_cli("status", "--store", REDIS, "--namespace", fleet.namespace))
    try:
        shown = pane.wait_for("EXIT=")
        assert "EXIT=0" in shown
        lines = shown.splitlines()
        start = lines.index("BREAKERS (2)")
        assert lines[start + 2].startswith("payments-api  OPEN")
        assert lines[start + 3].startswith("search-api    CLOSED")
        assert "opened after 1 consecutive failure(s)" in lines[start + 2]
        limiter = next(line for line in lines if line.startswith("api.example.com"))
        assert ["api.example.com", "SATURATED", "2/60s", "2/2", "0", "-"] == limiter.split()
        painted = pane.screen(escapes=True)
        assert "\x1b[31;1mOPEN" in painted or "\x1b[1m\x1b[31mOPEN" in painted
    finally:
        pane.close()


def test_watch_redraws_in_place(fleet):
    """Under --watch the table is redrawn where it was: one copy on screen, updated."""
    pane = Pane(_cli("status", "--store", REDIS, "--namespace", fleet.namespace, "--watch", "0.2"))
    try:
        pane.wait_for("BREAKERS (2)")

        @circuit_breaker(store=fleet, name="ledger-api", failure_threshold=1, on=Boom)
        def ledger():
            raise Boom

        with pytest.raises(Boom):
            ledger()
        shown = pane.wait_for("BREAKERS (3)")
        assert 1 == shown.count("BREAKERS (")  # redrawn, not scrolled
        assert 1 == shown.count("resilience status:")
        assert shown.splitlines()[0].startswith("resilience status:")  # from the top
        lines = shown.splitlines()
        start = lines.index("BREAKERS (3)")
        assert [lines[start + 2].split()[0], lines[start + 3].split()[0]] == [
            "ledger-api",
            "payments-api",
        ]
        pane.keys("C-c")
        assert "EXIT=0" in pane.wait_for("EXIT=")
    finally:
        pane.close()


def test_piped_output_is_plain_and_json_parses(fleet):
    """Piped: no escapes; --format json is one document json.loads reads; --filter narrows."""
    base = [sys.executable, "-m", "resilience", "status", "--store", REDIS]
    base += ["--namespace", fleet.namespace]
    table = subprocess.run(base, capture_output=True, text=True, check=True, timeout=30)
    assert "\x1b[" not in table.stdout
    assert "payments-api  OPEN" in table.stdout
    lines = table.stdout.splitlines()
    quota = next(line for line in lines if line.startswith("aws-quota"))
    assert ["aws-quota", "OK", "90.0", "tokens", "-", "-"] == quota.split()
    throttle = next(line for line in lines if line.startswith("pay-throttle"))
    assert ["pay-throttle", "REFUSING", "50%", "0/1", "k=1", "over", "60.0s"] == throttle.split()
    done = subprocess.run(
        [*base, "--format", "json", "--filter", "pay"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    data = json.loads(done.stdout)
    assert ["payments-api"] == [b["name"] for b in data["breakers"]]
    assert "open" == data["breakers"][0]["state"]
    assert 300.0 == data["breakers"][0]["reset_timeout"]
    assert [] == data["limiters"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_store_is_explained():
    """A closed port: one clear line naming the store, exit status 1, no traceback."""
    _tmux_or_skip()
    port = _free_port()
    pane = Pane(_cli("status", "--store", f"redis://127.0.0.1:{port}/0", "--timeout", "0.5"))
    try:
        shown = pane.wait_for("EXIT=")
        assert f"error: cannot reach Redis at 127.0.0.1:{port} within 0.5 s" in shown
        assert "Traceback" not in shown
        assert "EXIT=1" in shown
    finally:
        pane.close()


def test_without_a_store_it_says_how_to_point_it():
    """No --store: how to name a Redis store, and the embedded way in for memory."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience", "status"], capture_output=True, text=True, timeout=30
    )
    assert 2 == done.returncode
    assert "--store redis://host:6379/0" in done.stderr
    assert "resilience.dashboard.serve()" in done.stderr


def test_reading_a_process_dashboard():
    """--store http://... reads a process's own memory store and metrics through its page."""
    from resilience.dashboard import serve
    from resilience.stores import MemoryStore

    store = MemoryStore()

    @circuit_breaker(store=store, name="inside", failure_threshold=1, on=Boom)
    def inside():
        raise Boom

    with pytest.raises(Boom):
        inside()
    with serve(0, store=store) as page:
        done = subprocess.run(
            [sys.executable, "-m", "resilience", "status", "--store", page.url, "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    data = json.loads(done.stdout)
    assert ("memory", ["inside"], "open") == (
        data["store"],
        [b["name"] for b in data["breakers"]],
        data["breakers"][0]["state"],
    )
    assert data["metrics"] is not None


def test_watch_json_is_one_document_per_line(fleet):
    """--watch with --format json writes one JSON document per line, for scripts to follow."""
    command = [sys.executable, "-m", "resilience", "status", "--store", REDIS]
    command += ["--namespace", fleet.namespace, "--format", "json", "--watch", "0.1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            lines = [proc.stdout.readline() for _ in range(3)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    documents = [json.loads(line) for line in lines]
    assert [2, 2, 2] == [len(d["breakers"]) for d in documents]
    assert len({d["taken_at"] for d in documents}) == 3  # three reads, not one printed thrice


def test_the_dashboard_command_serves_a_redis_store(fleet):
    """`dashboard --store redis://...` serves the fleet's page on loopback until interrupted."""
    import signal
    import urllib.request

    port = _free_port()
    command = [sys.executable, "-m", "resilience", "dashboard", "--store", REDIS]
    command += ["--namespace", fleet.namespace, "--port", str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            banner = proc.stdout.readline()
            assert f"at http://127.0.0.1:{port}/ (Ctrl-C stops)" in banner
            url = f"http://127.0.0.1:{port}/snapshot.json"
            with urllib.request.urlopen(url, timeout=10) as reply:
                data = json.loads(reply.read())
            assert ["payments-api", "search-api"] == [b["name"] for b in data["breakers"]]
            assert data["metrics"] is None  # another process's calls are not ours to count
        finally:
            proc.send_signal(signal.SIGINT)
            assert 0 == proc.wait(timeout=10)


def test_a_cluster_store_from_the_command_line(request):
    """--cluster: a node's URL reads every primary, on the servers' own clock (no test clock)."""
    from tests.conftest import redis_store_for

    store = redis_store_for("cluster", request)
    try:

        @circuit_breaker(store=store, name="cluster-api", failure_threshold=1, on=Boom)
        def fail():
            raise Boom

        with pytest.raises(Boom):
            fail()
        for n in range(6):  # keys on every primary
            rate_limited(rate=5, per=60.0, key=f"cluster-limit-{n}", store=store)(lambda: 1)()
        store._meta.settle()
        port = request.getfixturevalue("redis_servers").cluster()[0].port
        base = [sys.executable, "-m", "resilience", "status", "--store"]
        base += [f"redis://127.0.0.1:{port}", "--cluster", "--namespace", store.namespace]
        done = subprocess.run(
            [*base, "--format", "json"], capture_output=True, text=True, check=True, timeout=60
        )
        data = json.loads(done.stdout)
        assert [("cluster-api", "open")] == [(b["name"], b["state"]) for b in data["breakers"]]
        assert {f"cluster-limit-{n}" for n in range(6)} == {r["key"] for r in data["limiters"]}
        table = subprocess.run(base, capture_output=True, text=True, check=True, timeout=60)
        assert "cluster-api  OPEN" in table.stdout
    finally:
        store.clear()
        store.close()


def test_a_sentinel_store_from_the_command_line(request):
    """--sentinel SERVICE: the URL is a Sentinel; the table reads the primary it names."""
    from tests.conftest import redis_store_for

    store = redis_store_for("sentinel", request)
    try:

        @circuit_breaker(store=store, name="sentinel-api", failure_threshold=1, on=Boom)
        def fail():
            raise Boom

        with pytest.raises(Boom):
            fail()
        store._meta.settle()
        port = request.getfixturevalue("redis_servers").sentinel()[2].port
        base = [sys.executable, "-m", "resilience", "status", "--store"]
        base += [f"redis://127.0.0.1:{port}", "--sentinel", "svc", "--namespace", store.namespace]
        done = subprocess.run(
            [*base, "--format", "json"], capture_output=True, text=True, check=True, timeout=60
        )
        data = json.loads(done.stdout)
        assert [("sentinel-api", "open")] == [(b["name"], b["state"]) for b in data["breakers"]]
        wrong = subprocess.run(
            [*base[:5], "rediss://127.0.0.1:1", "--sentinel", "svc"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert 0 != wrong.returncode
        assert "needs a redis:// URL of a Sentinel" in wrong.stderr
    finally:
        store.clear()
        store.close()


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--store", "http://127.0.0.1:1", "--cluster"], "not a process's page"),
        (["--store", "http://127.0.0.1:1", "--sentinel", "svc"], "not a process's page"),
        (["--store", "redis://127.0.0.1:1", "--cluster", "--sentinel", "svc"], "give one"),
    ],
)
def test_deployment_options_that_cannot_apply_are_refused(options, said):
    """--cluster/--sentinel with a page URL, or both at once: a clear error, exit status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience", "status", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert 2 == done.returncode
    assert said in done.stderr
