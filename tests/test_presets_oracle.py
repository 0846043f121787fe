"""
The presets against the installed SDKs' own functions, on thousands of generated inputs.

The oracle is the SDK itself: ``_parse_retry_after_header``, ``_calculate_retry_timeout``
and ``_should_retry`` on real OpenAI, Anthropic and Tinker client objects, and the Tinker
``RetryHandler``'s ``_should_retry`` and ``_calculate_retry_delay``. Random draws are made
equal by seeding the one ``random`` both sides use, never by replacing a function.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import string

from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import httpx2
import openai
import pytest
import tinker

from hypothesis import given, settings
from hypothesis import strategies as st
from tinker._client import AsyncTinker
from tinker.lib.retry_handler import RetryHandler
from tinker.lib.retryable_exception import RetryableException

from resilience import presets
from resilience.presets import stainless_retry_after


pytestmark = pytest.mark.filterwarnings("ignore:The `construct` method is deprecated")

MANY = settings(max_examples=350, deadline=None)  # x3 families: 1050 inputs per function
BIG = 10**6  # the client's max_retries, so retries_taken can go past the SDKs' 1000 cap


@pytest.fixture(scope="module", name="clients")
def _clients():
    """One real client of each SDK (never connected: nothing listens on port 9)."""
    made = {
        "openai": openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=BIG),
        "anthropic": anthropic.Anthropic(
            api_key="k", base_url="http://127.0.0.1:9", max_retries=BIG
        ),
    }

    async def make_tinker():
        return AsyncTinker(
            api_key="tml-" + "a" * 40, base_url="http://127.0.0.1:9", max_retries=BIG
        )

    made["tinker"] = asyncio.run(make_tinker())
    yield made
    made["openai"].close()
    made["anthropic"].close()


def _dates() -> st.SearchStrategy[str]:
    moments = st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
    now = datetime.now(UTC)
    soon = st.floats(-120, 200).map(lambda s: now + timedelta(seconds=s))
    return st.one_of(moments, soon).flatmap(
        lambda when: st.sampled_from(
            [
                email.utils.format_datetime(when, usegmt=True),
                when.strftime("%A, %d-%b-%y %H:%M:%S GMT"),  # RFC 850
                when.strftime("%a %b %d %H:%M:%S %Y"),  # asctime
                when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0200"),
                when.strftime("%d %b %Y %H:%M"),
            ]
        )
    )


SAFE = string.ascii_letters + string.digits + " .,:+-_"
VALUES = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(0, 200).map(lambda f: f"{f:.3f}"),
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "1e400",
            "-1e400",
            " 5 ",
            "5_0",
            "0x10",
            "",
            "abc",
            "1,2",
            "+3",
            "0",
            "60",
            "60.0001",
            "120",
            "121",
            "0.0005",
            "-0",
        ]
    ),
    _dates(),
    st.text(SAFE, max_size=12),
)
HEADERS = st.fixed_dictionaries(
    {}, optional={"retry-after": VALUES, "retry-after-ms": VALUES, "x-should-retry": VALUES}
)


def _same(expected, actual, *, dated: bool) -> bool:
    if expected is None or actual is None:
        return expected is actual
    if math.isnan(expected):
        return math.isnan(actual)
    if dated:  # both read the wall clock, a moment apart (longer on a loaded machine)
        return actual == pytest.approx(expected, abs=0.5)
    return actual == expected


def _dated(headers: dict[str, str]) -> bool:
    for value in headers.values():
        try:
            float(value)
        except ValueError:
            return True
    return False


SDK_MODULES = {
    "openai": (httpx2, "openai"),
    "anthropic": (httpx2, "anthropic"),
    "tinker": (httpx, "tinker"),
}
FAMILIES = sorted(SDK_MODULES)


def _response(family: str, status: int, headers: dict[str, str]):
    module = SDK_MODULES[family][0]
    request = module.Request("POST", "http://127.0.0.1:9/v1/x")
    return module.Response(status, headers=headers, request=request)


PRESETS = {"openai": presets.openai(), "anthropic": presets.anthropic(), "tinker": presets.tinker()}


def _preset(family: str):
    return PRESETS[family]


def _final_options(client):
    module = __import__(f"{type(client).__module__.split('.')[0]}._models", fromlist=["x"])
    return module.FinalRequestOptions.model_construct(method="post", url="/x")


@pytest.mark.parametrize("family", FAMILIES)
class TestAgainstTheSdk:
    @MANY
    @given(headers=HEADERS)
    def test_retry_after_parsing(self, clients, family, headers):
        """stainless_retry_after reads every header value as the SDK's parser does."""
        response = _response(family, 429, headers)
        expected = clients[family]._parse_retry_after_header(response.headers)
        actual = stainless_retry_after(response.headers, flavour=family)
        assert _same(expected, actual, dated=_dated(headers)), (expected, actual)

    @MANY
    @given(
        headers=HEADERS,
        retries_taken=st.one_of(st.integers(0, 12), st.integers(0, BIG)),
        seed=st.integers(0, 2**32),
    )
    def test_retry_timeout(self, clients, family, headers, retries_taken, seed):
        """The preset's wait equals _calculate_retry_timeout for the same headers and draw."""
        client = clients[family]
        response = _response(family, 503, headers)
        random.seed(seed)
        expected = client._calculate_retry_timeout(
            BIG - retries_taken, _final_options(client), response.headers
        )
        policy = _preset(family).retry
        server = policy.delay_hook(response)
        if server is not None and server > 0 and math.isfinite(server):
            actual = min(server, policy.retry_after_cap)  # the contract's rule for a hook
        else:
            random.seed(seed)
            actual = policy.backoff.delay(retries_taken, random.random())
        assert _same(expected, actual, dated=_dated(headers)), (expected, actual)

    @MANY
    @given(status=st.integers(400, 599), headers=HEADERS)
    def test_should_retry_a_response(self, clients, family, status, headers):
        """on_result on an error response, and on= on the SDK's error, agree with _should_retry."""
        client = clients[family]
        response = _response(family, status, headers)
        expected = client._should_retry(response)
        policy = _preset(family).retry
        assert expected == policy.on_result(response)
        error = client._make_status_error_from_response(response)
        assert expected == policy.on(error)

    @given(status=st.integers(100, 399), headers=HEADERS)
    def test_success_is_never_retried(self, family, status, headers):
        """The SDKs raise only on 4xx/5xx, so a 2xx/3xx is returned whatever its headers."""
        assert not _preset(family).retry.on_result(_response(family, status, headers))


_REQUEST = httpx.Request("POST", "http://127.0.0.1:9/x")
_PLAIN_ERRORS = [
    tinker.APIConnectionError(request=_REQUEST),
    tinker.APITimeoutError(request=_REQUEST),
    RetryableException("again"),
    TimeoutError(),
    httpx.ReadTimeout("slow", request=_REQUEST),
    httpx.ConnectError("refused", request=_REQUEST),
    ConnectionError(),
    ValueError("bad"),
    tinker.APIResponseValidationError(httpx.Response(200, request=_REQUEST), None),
]
HANDLER = RetryHandler()
HANDLER_PRESET = presets.tinker_retry_handler()


def _handler_error(clients, kind, status):
    """One of tinker's errors: a plain one, a bare APIStatusError, or the client's mapped one."""
    if kind < len(_PLAIN_ERRORS):
        return _PLAIN_ERRORS[kind]
    response = httpx.Response(status, request=_REQUEST)
    if kind == len(_PLAIN_ERRORS):
        return tinker.APIStatusError("x", response=response, body=None)
    return clients["tinker"]._make_status_error_from_response(response)


class TestRetryHandler:
    @MANY
    @given(kind=st.integers(0, len(_PLAIN_ERRORS) + 1), status=st.integers(100, 700))
    def test_should_retry(self, clients, kind, status):
        """tinker_retry_handler()'s on= is RetryHandler._should_retry, error by error."""
        if kind > len(_PLAIN_ERRORS) and not 400 <= status <= 599:
            status = 400 + status % 200  # the client maps error statuses only
        error = _handler_error(clients, kind, status)
        assert HANDLER._should_retry(error) == HANDLER_PRESET.retry.on(error)

    @MANY
    @given(attempt=st.one_of(st.integers(0, 70), st.integers(0, BIG)), seed=st.integers(0, 2**32))
    def test_retry_delay(self, attempt, seed):
        """The backoff equals _calculate_retry_delay for the same attempt and draw."""
        random.seed(seed)
        expected = HANDLER._calculate_retry_delay(attempt)
        random.seed(seed)
        actual = HANDLER_PRESET.retry.backoff.delay(attempt, random.random())
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12)
