"""
The real OpenAI, Anthropic and Tinker SDKs, decorated as users do, against loopback imitations.

Each SDK client is made with ``max_retries=0`` and its calls decorated with the matching
preset; a scripted server answers ``POST /v1/chat/completions`` (OpenAI), ``POST
/v1/messages`` (Anthropic) or ``GET /api/v1/healthz`` (Tinker, async only: the SDK has no
sync client). Every scenario checks the requests the server saw, the waits in virtual time
and the exception the caller finally gets.
"""

from __future__ import annotations

import asyncio
import itertools

from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from tinker._client import AsyncTinker

from resilience import presets, resilient
from resilience.transport import AsyncResilientTransport as AsyncHttpxTransport
from resilience.transport_httpx2 import AsyncResilientTransport, ResilientTransport

from .httpserver import Step, serve


CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [],
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [],
    "model": "m",
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
HEALTH = {"status": "ok"}

# tinker 0.38 builds its response models with pydantic's deprecated construct()
pytestmark = pytest.mark.filterwarnings("ignore:The `construct` method is deprecated")

_names = itertools.count()


@pytest.fixture(name="server", scope="module")
def _server():
    with serve() as (url, server):
        yield url, server


@pytest.fixture(name="dead", scope="module")
def _dead():
    with serve() as (url, _):
        pass
    return url  # nothing listens there any more: connections are refused


@dataclass(frozen=True)
class Sdk:
    """One SDK flavour: how to build its client, make one call, and its preset."""

    name: str
    is_async: bool
    ok: dict[str, Any]

    def client(self, base: str, script: str, timeout: float = 5.0) -> Any:
        headers = {"x-script": script}
        if self.name == "openai":
            cls = openai.AsyncOpenAI if self.is_async else openai.OpenAI
            return cls(
                api_key="sk-test", base_url=f"{base}/v1", max_retries=0, timeout=timeout,
                default_headers=headers,
            )  # fmt: skip
        if self.name == "anthropic":
            cls = anthropic.AsyncAnthropic if self.is_async else anthropic.Anthropic
            return cls(
                api_key="sk-ant-test", base_url=base, max_retries=0, timeout=timeout,
                default_headers=headers,
            )  # fmt: skip
        return AsyncTinker(
            api_key="tml-" + "a" * 40, base_url=base, max_retries=0, timeout=timeout,
            default_headers=headers,
        )  # fmt: skip

    def preset(self) -> Any:
        if self.name == "openai":
            return presets.openai()
        if self.name == "anthropic":
            return presets.anthropic()
        return presets.tinker(max_retries=2)

    def call(self, client: Any) -> Any:
        if self.name == "openai":
            return client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        if self.name == "anthropic":
            return client.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        return client.service.health_check()

    def run(self, fn: Any, client: Any) -> Any:
        """Call *fn(client)* (on a fresh event loop when async), then close the client."""
        if not self.is_async:
            with client:
                return fn(client)

        async def main():
            async with client:
                return await fn(client)

        return asyncio.run(main())

    def decorated(self) -> Any:
        stack = self.preset()
        if self.is_async:

            async def call(client):
                return await self.call(client)

        else:

            def call(client):
                return self.call(client)

        return stack(call)

    def error(self, what: str) -> type[BaseException]:
        module: Any = {"openai": openai, "anthropic": anthropic}.get(self.name)
        if module is None:
            import tinker

            module = tinker
        if what == "529" and self.name == "anthropic":
            return anthropic.OverloadedError  # type: ignore[no-any-return]
        if what == "503" and self.name == "anthropic":
            return anthropic.ServiceUnavailableError  # type: ignore[no-any-return]
        return {  # type: ignore[no-any-return]
            "429": module.RateLimitError,
            "500": module.InternalServerError,
            "503": module.InternalServerError,
            "529": module.InternalServerError,
            "400": module.BadRequestError,
            "refused": module.APIConnectionError,
            "timeout": module.APITimeoutError,
        }[what]


SDKS = [
    Sdk("openai", False, CHAT),
    Sdk("openai", True, CHAT),
    Sdk("anthropic", False, MESSAGE),
    Sdk("anthropic", True, MESSAGE),
    Sdk("tinker", True, HEALTH),
]


@pytest.fixture(
    name="sdk", params=SDKS, ids=lambda s: f"{s.name}-{'async' if s.is_async else 'sync'}"
)
def _sdk(request):
    return request.param


def _script(server, *steps: Step) -> str:
    name = f"s{next(_names)}"
    server.scripts[name] = list(steps)
    return name


def _in_backoff(waits, caps=(0.5, 1.0, 2.0)):
    """Each wait is the SDKs' exponential backoff: (0.75 x, x] for 0.5, 1, 2..."""
    return all(0.75 * cap < wait <= cap for wait, cap in zip(waits, caps, strict=False))


@pytest.mark.parametrize(
    ("header", "wait"), [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5)]
)
def test_429_waits_what_the_server_asked(sdk, server, clock, header, wait):
    """A 429 with Retry-After (seconds or milliseconds): one retry, the exact wait, success."""
    base, srv = server
    script = _script(srv, Step(429, header, {"error": {"message": "slow"}}), Step(200, {}, sdk.ok))
    client = sdk.client(base, script)
    result = sdk.run(sdk.decorated(), client)
    assert 2 == len(srv.seen[script])
    assert [wait] == clock.sleeps
    assert result is not None


@pytest.mark.parametrize("status", ["503", "529"])
def test_overloaded_retried_until_attempts_run_out(sdk, server, clock, status):
    """503 and 529 are retried on the backoff; the caller gets the last error object."""
    base, srv = server
    script = _script(srv, Step(int(status), {}, {"error": {"message": "busy"}}))
    client = sdk.client(base, script)
    with pytest.raises(sdk.error(status)) as info:
        sdk.run(sdk.decorated(), client)
    assert 3 == len(srv.seen[script])
    assert 2 == len(clock.sleeps)
    assert _in_backoff(clock.sleeps)
    assert "3" == info.value.response.headers["x-hit"]  # the last answer, not a wrapper
    assert int(status) == info.value.status_code


def test_should_retry_false_on_a_500_is_obeyed(sdk, server, clock):
    """x-should-retry: false stops at once, even on a 500."""
    base, srv = server
    script = _script(srv, Step(500, {"x-should-retry": "false"}, {"error": {"message": "no"}}))
    with pytest.raises(sdk.error("500")) as info:
        sdk.run(sdk.decorated(), sdk.client(base, script))
    assert (1, []) == (len(srv.seen[script]), clock.sleeps)
    assert "1" == info.value.response.headers["x-hit"]


def test_400_is_not_retried(sdk, server, clock):
    """A 400 is the caller's mistake: one request, the SDK's BadRequestError."""
    base, srv = server
    script = _script(srv, Step(400, {}, {"error": {"message": "bad"}}))
    with pytest.raises(sdk.error("400")):
        sdk.run(sdk.decorated(), sdk.client(base, script))
    assert (1, []) == (len(srv.seen[script]), clock.sleeps)


def test_refused_connection_is_retried(sdk, dead, clock):
    """A refused connection (the SDK's APIConnectionError from the transport's) is retried."""
    with pytest.raises(sdk.error("refused")) as info:
        sdk.run(sdk.decorated(), sdk.client(dead, "refused"))
    assert not isinstance(info.value, sdk.error("timeout"))
    assert 2 == len(clock.sleeps)
    assert _in_backoff(clock.sleeps)
    assert info.value.__cause__ is not None  # the transport's own error, kept


def test_read_timeout_is_retried(sdk, server, clock):
    """A read timeout (the SDK's APITimeoutError) is retried: three requests reach the server."""
    base, srv = server
    script = _script(srv, Step(200, {}, sdk.ok, hang=0.5))
    with pytest.raises(sdk.error("timeout")):
        sdk.run(sdk.decorated(), sdk.client(base, script, timeout=0.05))
    assert 3 == len(srv.seen[script])
    assert _in_backoff(clock.sleeps)


# -- the class decorator on real SDK subclasses ----------------------------------------------


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_class_decorator_sends_exactly_attempts(server, clock, family):
    """@resilient on an OpenAI/Anthropic subclass: 3 attempts, 3 requests to an always-503."""
    base, srv = server
    script = _script(srv, Step(503, {}, {"error": {"message": "busy"}}))
    stack = presets.openai() if family == "openai" else presets.anthropic()
    parent = openai.OpenAI if family == "openai" else anthropic.Anthropic

    @resilient(stack)
    class Client(parent):  # type: ignore[misc, valid-type]
        pass

    sdk = Sdk(family, False, {})
    kwargs: dict[str, Any] = {"max_retries": 0, "default_headers": {"x-script": script}}
    if family == "openai":
        made = Client(api_key="sk", base_url=f"{base}/v1", **kwargs)
    else:
        made = Client(api_key="sk-ant", base_url=base, **kwargs)
    with made, pytest.raises(sdk.error("503")):
        sdk.call(made)
    assert 3 == len(srv.seen[script])
    assert 2 == len(clock.sleeps)
    assert "close" not in vars(Client)  # closing is left undecorated


@pytest.mark.anyio
async def test_class_decorator_async(server, clock):
    """The same on AsyncOpenAI: attempts never multiply through post -> request."""
    base, srv = server
    script = _script(srv, Step(503, {}, {"error": {"message": "busy"}}))

    @resilient(presets.openai(max_retries=3))
    class Client(openai.AsyncOpenAI):
        pass

    made = Client(
        api_key="sk", base_url=f"{base}/v1", max_retries=0, default_headers={"x-script": script}
    )
    with pytest.raises(openai.InternalServerError):
        await made.chat.completions.create(model="m", messages=[])
    assert 4 == len(srv.seen[script])
    await made.close()


# -- the httpx2 transport, where the SDKs take an http_client ---------------------------------


def test_transport_under_openai(server, clock):
    """ResilientTransport in openai.DefaultHttpxClient: 503, 503, 200 end in success."""
    base, srv = server
    script = _script(srv, Step(503), Step(503), Step(200, {}, CHAT))
    client = openai.OpenAI(
        api_key="sk",
        base_url=f"{base}/v1",
        max_retries=0,
        default_headers={"x-script": script},
        http_client=openai.DefaultHttpxClient(transport=ResilientTransport(presets.openai())),
    )
    with client:
        assert "chatcmpl-1" == client.chat.completions.create(model="m", messages=[]).id
    assert 3 == len(srv.seen[script])
    assert _in_backoff(clock.sleeps)
    counts = [headers.get("x-stainless-retry-count") for _, _, headers in srv.seen[script]]
    assert ["0", "1", "2"] == counts  # as the SDK's own loop numbers its retries


def test_transport_under_anthropic_gives_the_last_error(server, clock):
    """Under anthropic.DefaultHttpxClient, the last 529 becomes the SDK's OverloadedError."""
    base, srv = server
    script = _script(srv, Step(529, {}, {"error": {"type": "overloaded_error", "message": "x"}}))
    client = anthropic.Anthropic(
        api_key="sk-ant",
        base_url=base,
        max_retries=0,
        default_headers={"x-script": script},
        http_client=anthropic.DefaultHttpxClient(transport=ResilientTransport(presets.anthropic())),
    )
    with client, pytest.raises(anthropic.OverloadedError) as info:
        client.messages.create(model="m", max_tokens=1, messages=[])
    assert (3, "3") == (len(srv.seen[script]), info.value.response.headers["x-hit"])


@pytest.mark.anyio
async def test_async_transport_under_anthropic(server, clock):
    """AsyncResilientTransport in anthropic.DefaultAsyncHttpxClient waits out a Retry-After."""
    base, srv = server
    script = _script(srv, Step(429, {"retry-after": "3"}), Step(200, {}, MESSAGE))
    client = anthropic.AsyncAnthropic(
        api_key="sk-ant",
        base_url=base,
        max_retries=0,
        default_headers={"x-script": script},
        http_client=anthropic.DefaultAsyncHttpxClient(
            transport=AsyncResilientTransport(presets.anthropic())
        ),
    )
    message = await client.messages.create(model="m", max_tokens=1, messages=[])
    assert ("msg_1", 2) == (message.id, len(srv.seen[script]))
    assert 3.0 in clock.sleeps
    await client.close()


@pytest.mark.anyio
async def test_httpx_transport_under_tinker(server, clock):
    """Tinker is built on httpx: resilience.transport's AsyncResilientTransport rides a 503."""
    import httpx

    base, srv = server
    script = _script(srv, Step(503), Step(429, {"retry-after": "5"}), Step(200, {}, HEALTH))
    client = AsyncTinker(
        api_key="tml-" + "a" * 40,
        base_url=base,
        max_retries=0,
        default_headers={"x-script": script},
        http_client=httpx.AsyncClient(transport=AsyncHttpxTransport(presets.tinker())),
    )
    async with client:
        await client.service.health_check()
    assert 3 == len(srv.seen[script])
    assert 5.0 == clock.sleeps[-1]
    assert _in_backoff(clock.sleeps[:1])
