"""The live page: its server (HTTP, events, safety) and a real headless Chromium driving it."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import pathlib
import shutil
import threading
import time
import urllib.request

import pytest

from resilience import (
    Backoff,
    RetryBudget,
    RetryQuota,
    backoff_window,
    bounded,
    circuit_breaker,
    rate_limited,
    retry,
    throttled,
    traced,
)
from resilience.dashboard import serve
from resilience.stores import MemoryStore
from resilience.telemetry import RollingMetrics


ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class Boom(Exception):
    """The failure of our fake upstream."""


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, dict(reply.headers), reply.read()


class TestServer:
    def test_page_script_and_snapshot(self):
        """The page and its script come from the package; the snapshot is redacted JSON."""
        store = MemoryStore()

        for name in ("Bearer sk-live-123", "https://ops:hunter2@api.example.com/v1"):

            @circuit_breaker(store=store, name=name, failure_threshold=1, on=Boom)
            def leaky():
                raise Boom

            with pytest.raises(Boom):
                leaky()
        rate_limited(rate=5, key="api.example.com?api_key=abc123", store=store)(lambda: 1)()
        with serve(0, store=store, metrics=False, title="shop") as page:
            assert page.url.startswith("http://127.0.0.1:")
            status, headers, body = _get(page.url)
            assert (200, True) == (status, b'<script src="dashboard.js">' in body)
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert "DENY" == headers["X-Frame-Options"]
            status, headers, script = _get(page.url + "dashboard.js")
            assert b"new EventSource" in script
            _, _, raw = _get(page.url + "snapshot.json")
        data = json.loads(raw)
        assert {"Bearer [REDACTED]", "https://[REDACTED]@api.example.com/v1"} == {
            b["name"] for b in data["breakers"]
        }
        assert ["api.example.com?api_key=[REDACTED]"] == [r["key"] for r in data["limiters"]]
        assert b"hunter2" not in raw
        assert b"abc123" not in raw
        assert b"sk-live-123" not in raw
        assert ("shop", None) == (data["title"], data["metrics"])

    def test_events_stream_frames_at_most_once_a_second(self):
        """Frames arrive about once per interval, and only while a page listens."""
        store = MemoryStore()
        with serve(0, store=store, metrics=False) as page:
            time.sleep(0.3)
            assert 0 == page.frames  # nobody listening: no snapshot read at all
            reply = urllib.request.urlopen(page.url + "events", timeout=10)
            frames, started = [], time.monotonic()
            while len(frames) < 3:
                line = reply.readline()
                if line.startswith(b"data: "):
                    frames.append((time.monotonic(), json.loads(line[6:])))
            reply.close()
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
        assert all(gap >= 0.9 for gap in gaps), gaps
        assert frames[0][0] - started < 1.0  # the first frame comes at once
        assert "memory" == frames[0][1]["store"]

    def test_pausing_and_pages_coming_do_not_wake_the_stream(self):
        """Only a new frame (or the 15 s keep-alive) makes a stream write: not a pause."""
        with serve(0, store=MemoryStore(), metrics=False) as page:
            reply = urllib.request.urlopen(page.url + "events", timeout=10)
            while not reply.readline().startswith(b"data: "):
                pass  # the first frame, sent at once
            frames = page.frames
            for _ in range(50):  # well within the interval: no new frame is due
                page.pause(True)
                page.pause(False)
            other = urllib.request.urlopen(page.url + "events", timeout=10)
            other.close()
            page.pause(True)  # no frame may be read from here on
            written = page.frames - frames
        rest = reply.read()  # up to the end of the stream, which stop() closes
        reply.close()
        assert rest.count(b"data: ") == written
        assert b"keep-alive" not in rest

    def test_read_only_and_rebinding_refused(self):
        """Writes are refused; a foreign Host header (DNS rebinding) is refused."""
        with serve(0, store=MemoryStore(), metrics=False) as page:
            conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
            conn.request("POST", "/snapshot.json", body=b"{}")
            assert 405 == conn.getresponse().status
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
            conn.request("GET", "/", headers={"Host": "evil.example:80"})
            assert 421 == conn.getresponse().status
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
            conn.request("GET", "/nope", headers={"Host": f"localhost:{page.port}"})
            assert 404 == conn.getresponse().status
            conn.close()

    def test_bad_arguments(self):
        """Each argument names itself and its range; the metrics it made are detached at stop."""
        with pytest.raises(ValueError, match="interval"):
            serve(0, interval=0.5)
        with pytest.raises(ValueError, match="port"):
            serve(70000)
        with pytest.raises(ValueError, match="host"):
            serve(0, host="")
        page = serve(0)
        assert page.metrics is not None
        assert "attached" in repr(page.metrics)
        page.stop()
        page.stop()
        assert "detached" in repr(page.metrics)

    def test_cli_refuses_without_a_redis_store(self, capsys):
        """`dashboard` without --store says how to serve a process's memory store instead."""
        from resilience._cli import main

        assert 2 == main(["dashboard"])
        assert "resilience.dashboard.serve(port=8321)" in capsys.readouterr().err


def _browser_or_skip() -> None:
    missing = [
        name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path
    ]
    reason = ""
    if missing:
        reason = (
            f"{' and '.join(missing)} not installed (apt-get install -y chromium chromium-driver)"
        )
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            reason = "selenium is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a browser: {reason}")
        pytest.skip(reason)


@pytest.fixture(name="browser")
def _browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _scene(store: MemoryStore, release: threading.Event):
    """Something in every part of the page, as an application under strain would have."""

    @traced(name="payments-api", log=False)
    @circuit_breaker(
        store=store, name="payments-api", failure_threshold=3, reset_timeout=60, on=Boom
    )
    def pay(fail):
        if fail:
            raise Boom
        return "ok"

    @traced(name="search-api", log=False)
    @circuit_breaker(store=store, name="search-api", failure_rate=0.5, window_size=20, on=Boom)
    @retry(attempts=2, on=Boom, name="search-api", backoff=Backoff(base=0.0, max=0.0))
    def search(n):
        if n % 4 == 0:
            raise Boom
        return "ok"

    for n in range(12):
        try:
            search(n)
        except Boom:
            pass
    for _ in range(5):
        pay(False)

    limited = rate_limited(rate=5, per=1.0, key="api.example.com", store=store)(lambda: "ok")
    for _ in range(5):
        limited()
    backoff_window("maps.example.com", store=store).set(45.0)

    @bounded(limit=8, key="db-pool", store=store, weight=3)
    def hold():
        release.wait(30)

    for _ in range(2):
        threading.Thread(target=hold, daemon=True).start()
    budget = RetryBudget(key="fleet-retries", store=store, ratio=0.2)
    for _ in range(30):
        budget.record_call()
    for _ in range(3):
        budget.try_retry()
    RetryQuota(capacity=500, key="aws-quota", store=store).backend().step(15, 15, 0)

    @throttled(k=1.5, window=60.0, on=Boom, key="search-throttle", store=store, rand=lambda: 1.0)
    def refused(fail):
        if fail:
            raise Boom

    for n in range(8):
        with contextlib.suppress(Boom):
            refused(n % 2 == 0)
    return pay


def test_a_breaker_opening_reaches_the_page_within_two_seconds(browser):
    """The page loads without console errors and shows the opening within 2 s; screenshot."""
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(script):
        # One script reads a whole frame: the page replaces its tiles on every update.
        return browser.execute_script(script)

    state = (
        "const t = document.querySelector('[data-kind=breaker][data-name=\"payments-api\"]');"
        "return t ? t.querySelector('.state').textContent : null;"
    )
    store = MemoryStore()
    release = threading.Event()
    with RollingMetrics() as metrics, serve(0, store=store, metrics=metrics, title="shop") as page:
        try:
            pay = _scene(store, release)
            spent, attached = page.cpu_seconds, time.monotonic()
            browser.get(page.url)
            WebDriverWait(browser, 10, poll_frequency=0.05).until(
                lambda d: shown(state) == "CLOSED"
            )
            for _ in range(3):
                with pytest.raises(Boom):
                    pay(True)
            opened = time.monotonic()
            WebDriverWait(browser, 5, poll_frequency=0.02).until(lambda d: shown(state) == "OPEN")
            latency = time.monotonic() - opened
            assert latency <= 2.0, f"the page showed the opening after {latency:.2f} s"
            first = shown("return document.querySelector('#breakers .tile').dataset.name")
            assert "payments-api" == first  # open breakers first
            rows = shown(
                "return [...document.querySelectorAll('#metrics tbody tr')].map(r => r.dataset.name)"
            )
            assert {"payments-api", "search-api"} <= set(rows)
            throttle = shown(
                "const t = document.querySelector('[data-kind=throttle]');"
                "return t ? [t.dataset.name, t.querySelector('.state').textContent] : null;"
            )
            assert ["search-throttle", "REFUSING"] == throttle
            quota = shown(
                "return document.querySelector('[data-kind=budget][data-name=\"aws-quota\"]')"
                ".textContent"
            )
            assert "tokens left 485.0" in quota
            assert "live" == shown("return document.getElementById('status').textContent")
            time.sleep(2.2)  # two more frames, so every sparkline has a few points
            share = (page.cpu_seconds - spent) / (time.monotonic() - attached)
            assert share <= 0.01, f"the attached page took {share:.2%} of a core"
            assert 0 < page.frames
            _save_screenshot(browser)
            errors = [
                entry
                for entry in browser.get_log("browser")
                if entry["level"] in ("SEVERE", "ERROR")
            ]
            assert [] == errors
        finally:
            release.set()


def _save_screenshot(browser) -> None:
    """Always into build/ (ignored); into docs/images/ too when RESILIENCE_DOCS_SCREENSHOT=1."""
    png = browser.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    targets = [ROOT / "build" / "screenshots" / "dashboard.png"]
    if os.environ.get("RESILIENCE_DOCS_SCREENSHOT") == "1":
        targets.append(ROOT / "docs" / "images" / "dashboard.png")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
