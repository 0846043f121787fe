"""Tests for ``resilience.http.parse_quota``: every header family, exact and fuzzed."""

from __future__ import annotations

import email.message

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience.http import Quota, parse_quota


NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


class TestIetf:
    def test_policy_and_state_merge_by_name(self) -> None:
        """q from the policy, r and t from RateLimit; w is a window, never a reset."""
        headers = {
            "RateLimit-Policy": '"default";q=100;w=60, "burst";q=10;w=1',
            "RateLimit": '"default";r=50;t=30',
        }
        assert [Quota("default", 100, 50, 30.0), Quota("burst", 10, None, None)] == parse_quota(
            headers
        )

    def test_tokens_and_odd_items_are_lenient(self) -> None:
        """Token names work; items with a bad name or bad numbers lose only those fields."""
        headers = {"ratelimit": 'day;r=0;t=3600, "x";r=-1;t=abc, 12bad;r=1'}
        assert [Quota("day", None, 0, 3600.0)] == parse_quota(headers)


class TestOpenAI:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5)],
    )
    def test_resets_in_go_durations(self, text: str, seconds: float) -> None:
        """Resets such as 1s, 6m0s and 20ms are seconds from now."""
        headers = {"x-ratelimit-reset-tokens": text}
        assert [Quota("tokens", None, None, seconds)] == parse_quota(headers)

    def test_the_full_family(self) -> None:
        """Requests and tokens, each with limit, remaining and reset."""
        headers = {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
        }
        quotas = parse_quota(headers)
        assert [Quota("requests", 60, 59, 1.0), Quota("tokens", 150000, 0, 360.0)] == quotas
        assert [False, True] == [quota.exhausted for quota in quotas]

    @pytest.mark.parametrize("text", ["", "s", "1x", "1s2", "m1s", "-1s", "1..0s", "1 s"])
    def test_malformed_resets_are_skipped(self, text: str) -> None:
        """A reset that is not a duration leaves the field None."""
        headers = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": text}
        assert [Quota("requests", None, 3, None)] == parse_quota(headers)


class TestAnthropic:
    def test_rfc3339_resets_and_every_name(self) -> None:
        """requests, tokens, input-tokens and output-tokens; a past reset is 0.0."""
        soon = (NOW + timedelta(seconds=42)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": soon,
            "anthropic-ratelimit-tokens-remaining": "10",
            "anthropic-ratelimit-input-tokens-reset": "2026-12-01T11:00:00+00:00",
            "anthropic-ratelimit-output-tokens-reset": "2026-12-01T13:00:00.5+01:00",
        }
        assert [
            Quota("requests", 50, 49, 42.0),
            Quota("tokens", None, 10, None),
            Quota("input-tokens", None, None, 0.0),
            Quota("output-tokens", None, None, 0.5),
        ] == parse_quota(headers, now=NOW)

    def test_naive_now_is_utc(self) -> None:
        """A naive ``now`` is taken as UTC."""
        headers = {"anthropic-ratelimit-tokens-reset": "2026-12-01T12:00:10Z"}
        naive = NOW.replace(tzinfo=None)
        assert [Quota("tokens", None, None, 10.0)] == parse_quota(headers, now=naive)


class TestPlainTrio:
    def test_delta_seconds(self) -> None:
        """The trio is named default; a small reset is seconds."""
        headers = {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "30",
        }
        assert [Quota("default", 5000, 0, 30.0)] == parse_quota(headers)

    def test_unix_time_reset(self) -> None:
        """A reset above 10**9 is a Unix time (GitHub); in the past it is 0.0."""
        future = str(int(NOW.timestamp()) + 90)
        assert [Quota("default", None, None, 90.0)] == parse_quota(
            {"x-ratelimit-reset": future}, now=NOW
        )
        assert [Quota("default", None, None, 0.0)] == parse_quota(
            {"x-ratelimit-reset": "1000000001"}, now=NOW
        )


class TestContainers:
    def test_every_container_parse_retry_after_takes(self) -> None:
        """dict, pairs, httpx.Headers and email.message.Message give the same quotas."""
        pairs = [("x-ratelimit-remaining", "7"), ("X-RateLimit-Limit", "10")]
        message = email.message.Message()
        for name, value in pairs:
            message[name] = value
        expected = [Quota("default", 10, 7, None)]
        for container in (dict(pairs), pairs, httpx.Headers(pairs), message):
            assert expected == parse_quota(container)

    @pytest.mark.parametrize("container", [None, 3, "text", b"bytes", object(), [1, 2]])
    def test_unreadable_containers_give_nothing(self, container: object) -> None:
        """Anything that is not headers gives an empty list."""
        assert [] == parse_quota(container)


names = st.sampled_from(
    [
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-requests-remaining",
    ]
)
values = st.text(max_size=40) | st.binary(max_size=40) | st.integers() | st.floats()


class TestProperties:
    @given(st.lists(st.tuples(names | st.text(max_size=20), values), max_size=12))
    def test_never_raises(self, pairs: list[tuple[str, object]]) -> None:
        """Any names and values: a list of Quotas, each with sane fields."""
        for quota in parse_quota(pairs, now=NOW):
            assert isinstance(quota, Quota)
            assert quota.limit is None or quota.limit >= 0
            assert quota.remaining is None or quota.remaining >= 0
            assert quota.reset is None or quota.reset >= 0.0

    @given(
        st.integers(0, 10**9),
        st.integers(0, 10**9),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 999),
    )
    def test_openai_family_round_trips(
        self, limit: int, remaining: int, hours: int, minutes: int, seconds: int, millis: int
    ) -> None:
        """Written the way the API writes them, the numbers come back exactly."""
        parts = f"{hours}h{minutes}m{seconds}s" if millis == 0 else f"{millis}ms"
        expected = hours * 3600 + minutes * 60 + seconds if millis == 0 else millis / 1000
        headers = {
            "x-ratelimit-limit-tokens": str(limit),
            "x-ratelimit-remaining-tokens": str(remaining),
            "x-ratelimit-reset-tokens": parts,
        }
        (quota,) = parse_quota(headers)
        assert (limit, remaining) == (quota.limit, quota.remaining)
        assert quota.reset == pytest.approx(expected)

    @given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**5))
    def test_ietf_round_trips(self, limit: int, remaining: int, reset: int) -> None:
        """``q``, ``r`` and ``t`` come back exactly, under any policy name."""
        headers = {
            "RateLimit-Policy": f'"p";q={limit};w=60',
            "RateLimit": f'"p";r={remaining};t={reset}',
        }
        assert [Quota("p", limit, remaining, float(reset))] == parse_quota(headers)

    @given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
    def test_anthropic_resets_round_trip(self, moment: datetime) -> None:
        """Any RFC 3339 time comes back as its distance from now (0 if past)."""
        aware = moment.replace(tzinfo=UTC)
        text = aware.isoformat()
        headers = {"anthropic-ratelimit-requests-reset": text}
        (quota,) = parse_quota(headers, now=NOW)
        assert quota.reset == pytest.approx(max(0.0, (aware - NOW).total_seconds()))
