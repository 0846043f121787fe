"""
resilience.http with real gRPC, botocore and aiohttp clients against loopback servers.

- gRPC: a real ``grpc.server`` on 127.0.0.1 whose one raw-bytes method fails as the request
  tells it (no protoc: a generic handler with no serializers).
- botocore: a DynamoDB client pointed at the scripted loopback server, which answers with
  AWS's throttling error body.
- aiohttp: a real ``ClientSession`` against the same server.
"""

from __future__ import annotations

import threading

from concurrent import futures

import aiohttp
import botocore.session
import grpc
import pytest

from botocore.config import Config

from resilience import Backoff, RetryPolicy, retry
from resilience.http import is_retryable_error, server_delay

from .httpserver import Step, serve


POLICY = RetryPolicy(
    attempts=3,
    on=is_retryable_error,
    delay_hook=server_delay,
    backoff=Backoff(jitter="none"),
)


# -- gRPC ---------------------------------------------------------------------------------------


class _Servicer:
    """``/test.Svc/Call``: the request ``b"CODE:n[:pushback]"`` fails n times with CODE."""

    def __init__(self) -> None:
        self.hits: dict[bytes, int] = {}
        self.lock = threading.Lock()

    def call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            n = self.hits[request] = self.hits.get(request, 0) + 1
        code, failures, *pushback = request.decode().split(":")
        if n > int(failures):
            return b"ok"
        if pushback:
            context.set_trailing_metadata((("grpc-retry-pushback-ms", pushback[0]),))
        context.abort(getattr(grpc.StatusCode, code), f"failing as told ({n})")
        return b""  # pragma: no cover - abort raises


@pytest.fixture(name="grpc_server", scope="module")
def _grpc_server():
    servicer = _Servicer()
    handler = grpc.method_handlers_generic_handler(
        "test.Svc", {"Call": grpc.unary_unary_rpc_method_handler(servicer.call)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_retries", 0)])
    stub = channel.unary_unary("/test.Svc/Call")
    yield stub, servicer, port
    channel.close()
    server.stop(None).wait()


class TestGrpc:
    def test_unavailable_is_retried(self, grpc_server, clock):
        """UNAVAILABLE twice, then an answer: three calls, the backoff between them."""
        stub, servicer, _ = grpc_server
        request = b"UNAVAILABLE:2"
        assert b"ok" == retry(POLICY)(lambda: stub(request, timeout=5))()
        assert (3, [0.5, 1.0]) == (servicer.hits[request], clock.sleeps)

    def test_invalid_argument_is_not(self, grpc_server, clock):
        """INVALID_ARGUMENT is the caller's mistake: one call, the RpcError re-raised."""
        stub, servicer, _ = grpc_server
        request = b"INVALID_ARGUMENT:5"
        with pytest.raises(grpc.RpcError) as info:
            retry(POLICY)(lambda: stub(request, timeout=5))()
        assert grpc.StatusCode.INVALID_ARGUMENT == info.value.code()
        assert (1, []) == (servicer.hits[request], clock.sleeps)

    @pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "ABORTED", "DEADLINE_EXCEEDED"])
    def test_other_transient_codes(self, grpc_server, clock, code):
        """RESOURCE_EXHAUSTED, ABORTED and DEADLINE_EXCEEDED are retried too."""
        stub, servicer, _ = grpc_server
        request = f"{code}:1".encode()
        assert b"ok" == retry(POLICY)(lambda: stub(request, timeout=5))()
        assert 2 == servicer.hits[request]

    def test_pushback_is_the_wait(self, grpc_server, clock):
        """A grpc-retry-pushback-ms trailer replaces the backoff."""
        stub, servicer, _ = grpc_server
        request = b"UNAVAILABLE:1:2500"
        assert b"ok" == retry(POLICY)(lambda: stub(request, timeout=5))()
        assert (2, [2.5]) == (servicer.hits[request], clock.sleeps)

    def test_negative_pushback_stops(self, grpc_server, clock):
        """A negative pushback means "do not retry", even for UNAVAILABLE."""
        stub, servicer, _ = grpc_server
        request = b"UNAVAILABLE:3:-1"
        with pytest.raises(grpc.RpcError):
            retry(POLICY)(lambda: stub(request, timeout=5))()
        assert 1 == servicer.hits[request]

    @pytest.mark.anyio
    async def test_aio_channel(self, grpc_server, clock):
        """grpc.aio errors are RpcErrors too: the same rules, pushback included."""
        _, servicer, port = grpc_server
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.enable_retries", 0)]
        ) as channel:
            stub = channel.unary_unary("/test.Svc/Call")
            request = b"UNAVAILABLE:1:750"

            @retry(POLICY)
            async def call():
                return await stub(request, timeout=5)

            assert b"ok" == await call()
        assert (2, [0.75]) == (servicer.hits[request], clock.sleeps)


# -- botocore -------------------------------------------------------------------------------------


@pytest.fixture(name="http", scope="module")
def _http():
    with serve() as (url, server):
        yield url, server


def _dynamodb(endpoint: str, script: str):
    client = botocore.session.get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )

    def tag(request, **_):
        request.headers["x-script"] = script

    client.meta.events.register("before-sign.dynamodb", tag)
    return client


THROTTLED = {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow"}
INVALID = {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": "bad"}


class TestBotocore:
    def test_throttling_is_retried_after_x_amz_retry_after(self, http, clock):
        """A ThrottlingException with x-amz-retry-after (ms) is retried after that long."""
        base, server = http
        server.scripts["aws-throttle"] = [
            Step(400, {"x-amz-retry-after": "1200"}, THROTTLED),
            Step(200, {}, {"TableNames": ["t"]}),
        ]
        client = _dynamodb(base, "aws-throttle")
        assert ["t"] == retry(POLICY)(client.list_tables)()["TableNames"]
        assert (2, [1.2]) == (len(server.seen["aws-throttle"]), clock.sleeps)
        client.close()

    def test_validation_error_is_not(self, http, clock):
        """A ValidationException is not retried: the caller gets botocore's ClientError."""
        base, server = http
        server.scripts["aws-invalid"] = [Step(400, {}, INVALID)]
        client = _dynamodb(base, "aws-invalid")
        with pytest.raises(client.exceptions.ClientError) as info:
            retry(POLICY)(client.list_tables)()
        assert "ValidationException" == info.value.response["Error"]["Code"]
        assert (1, []) == (len(server.seen["aws-invalid"]), clock.sleeps)
        client.close()

    def test_service_unavailable_is_retried(self, http, clock):
        """A 503 without a known code is retried on the backoff."""
        base, server = http
        server.scripts["aws-503"] = [Step(503, {}, {"__type": "Unknown", "message": "x"})]
        client = _dynamodb(base, "aws-503")
        with pytest.raises(client.exceptions.ClientError):
            retry(POLICY)(client.list_tables)()
        assert (3, [0.5, 1.0]) == (len(server.seen["aws-503"]), clock.sleeps)
        client.close()

    def test_connection_refused_is_retried(self, clock):
        """botocore's EndpointConnectionError is retried."""
        with serve() as (dead, _):
            pass
        client = _dynamodb(dead, "none")
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            retry(POLICY)(client.list_tables)()
        assert [0.5, 1.0] == clock.sleeps
        client.close()


# -- aiohttp -----------------------------------------------------------------------------------------


class TestAiohttp:
    @pytest.mark.anyio
    async def test_status_errors_and_retry_after(self, http, clock):
        """ClientResponseError follows the status rules; its Retry-After is the wait."""
        base, _ = http

        async with aiohttp.ClientSession(raise_for_status=True) as session:

            @retry(POLICY)
            async def get(path):
                async with session.get(f"{base}{path}") as response:
                    return response.status

            assert 200 == await get("/sequence/aio-429/429,200?retry-after=4")
            assert [4.0] == clock.sleeps
            with pytest.raises(aiohttp.ClientResponseError) as info:
                await get("/status/400")
            assert 400 == info.value.status
            assert [4.0] == clock.sleeps  # not retried

    @pytest.mark.anyio
    async def test_timeouts_and_refused_connections(self, http, clock):
        """ServerTimeoutError and ClientConnectorError are retried."""
        base, server = http
        with serve() as (dead, _):
            pass
        timeout = aiohttp.ClientTimeout(sock_read=0.05)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            @retry(POLICY)
            async def get(url):
                async with session.get(url) as response:
                    return response.status

            with pytest.raises(aiohttp.ServerTimeoutError):
                await get(f"{base}/slow/0.5")
            assert 3 == server.hits.count("/slow/0.5")
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(f"{dead}/status/200")
        assert [0.5, 1.0, 0.5, 1.0] == clock.sleeps
