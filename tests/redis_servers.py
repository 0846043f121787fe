"""
Redis servers of our own for the shared-state tests: TLS, unix socket, a cluster, Sentinel.

Each server is a ``redis-server`` child on 127.0.0.1 (free ephemeral ports, a temp dir),
started once per test session (per xdist worker: each worker has its own ports) and killed
at the end. The shared server on 127.0.0.1:6379 is never touched here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time

from pathlib import Path
from typing import Any

import pytest
import redis


REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
OPENSSL = shutil.which("openssl")


def need(binary: str | None, what: str) -> str:
    """Return *binary*, else skip (fail in CI) naming what it is needed for."""
    if binary is None:
        reason = f"{what} needs redis-server, redis-cli and openssl on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs them: {reason}")
        pytest.skip(reason)
    return binary


def free_port() -> int:
    """A free loopback TCP port (the kernel's pick, so two workers never collide)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One ``redis-server`` child process, with its arguments kept so it can restart."""

    def __init__(self, directory: Path, name: str, args: list[str], *, port: int) -> None:
        self.dir = directory / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.args = args
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.tls: dict[str, Any] = {}  # a TLS-only server's client settings (ssl, CA file)

    def start(self, probe: dict[str, Any] | None = None) -> Server:
        binary = need(REDIS_SERVER, "a private Redis server")
        self.process = subprocess.Popen(
            [binary, *self.args],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        settings = probe or {"host": "127.0.0.1", "port": self.port}
        while True:
            try:
                with redis.Redis(socket_connect_timeout=0.2, socket_timeout=0.5, **settings) as c:
                    c.ping()
                return self
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, **self.tls, **kwargs)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


def _base(port: int) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-debug-command",
        "yes",
        "--protected-mode",
        "no",
        "--repl-diskless-sync-delay",
        "0",
    ]


class Servers:
    """The session's servers, each started when a test first asks for it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.all: list[Server] = []
        self._made: dict[str, Any] = {}

    def _once(self, name: str, make: Any) -> Any:
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    def _server(
        self, name: str, args: list[str], port: int, probe: dict[str, Any] | None = None
    ) -> Server:
        server = Server(self.dir, name, args, port=port)
        self.all.append(server)
        return server.start(probe)

    # -- unix socket ------------------------------------------------------------------------

    def unix(self) -> str:
        """The path of a unix-socket-only server."""

        def make() -> str:
            path = str(self.dir / "redis.sock")
            self._server("unix", [*_base(0), "--unixsocket", path], 0, {"unix_socket_path": path})
            return path

        return str(self._once("unix", make))

    # -- TLS ----------------------------------------------------------------------------------

    def certificate(self) -> tuple[Path, Path]:
        """(certificate, key) of a throwaway self-signed certificate for 127.0.0.1."""
        return self._once("certificate", self._certificate)  # type: ignore[no-any-return]

    def _certificate(self) -> tuple[Path, Path]:
        openssl = need(OPENSSL, "the TLS servers")
        cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        return cert, key

    def _tls_args(self, port: int) -> list[str]:
        """A server's arguments to listen on *port* with TLS only (clients need no certificate)."""
        cert, key = self.certificate()
        return [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ]

    def tls(self) -> tuple[int, str]:
        """(port, CA file) of a TLS-only server with a throwaway certificate."""

        def make() -> tuple[int, str]:
            port = free_port()
            cert = str(self.certificate()[0])
            probe = {"host": "127.0.0.1", "port": port, "ssl": True, "ssl_ca_certs": cert}
            self._server("tls", [*_base(0), *self._tls_args(port)], port, probe)
            return port, cert

        return self._once("tls", make)  # type: ignore[no-any-return]

    # -- cluster ------------------------------------------------------------------------------

    def cluster(
        self, name: str = "cluster", replicas: int = 0, *, tls: bool = False
    ) -> list[Server]:
        """The primaries (then replicas) of a 3-master cluster, every slot covered (*tls*: only)."""

        def make() -> list[Server]:
            cli = need(REDIS_CLI, "the cluster")
            nodes = []
            tls_client = {"ssl": True, "ssl_ca_certs": str(self.certificate()[0])} if tls else {}
            for index in range(3 * (1 + replicas)):
                port = free_port()
                args = [
                    *_base(port),
                    *([*self._tls_args(port), "--tls-cluster", "yes"] if tls else []),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                probe = {"host": "127.0.0.1", "port": port, **tls_client}
                node = self._server(f"{name}-{index}", args, port, probe)
                node.tls = tls_client
                nodes.append(node)
            cert = str(self.certificate()[0]) if tls else ""
            subprocess.run(
                [
                    cli,
                    *(["--tls", "--cacert", cert] if tls else []),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in nodes),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait_cluster_ok(nodes)
            return nodes

        return self._once(name, make)  # type: ignore[no-any-return]

    # -- Sentinel -----------------------------------------------------------------------------

    def sentinel(self, name: str = "sentinel") -> tuple[Server, Server, Server]:
        """(primary, replica, sentinel) watching service ``"svc"``, quorum 1, fast failover."""

        def make() -> tuple[Server, Server, Server]:
            primary_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
            primary = self._server(f"{name}-primary", _base(primary_port), primary_port)
            replica = self._server(
                f"{name}-replica",
                [*_base(replica_port), "--replicaof", "127.0.0.1", str(primary_port)],
                replica_port,
            )
            config = self.dir / f"{name}.conf"
            config.write_text(
                f"port {sentinel_port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"sentinel monitor svc 127.0.0.1 {primary_port} 1\n"
                "sentinel down-after-milliseconds svc 2000\n"
                "sentinel failover-timeout svc 2000\n"
                "sentinel parallel-syncs svc 1\n"
            )
            server = Server(self.dir, name, [str(config), "--sentinel"], port=sentinel_port)
            self.all.append(server)
            server.start()
            wait_replicated(primary, replica)
            wait_sentinel_sees(server, replica)  # else a failover is refused: NOGOODSLAVE
            return primary, replica, server

        return self._once(name, make)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for server in self.all:
            with contextlib.suppress(Exception):
                server.kill()


def wait_cluster_ok(nodes: list[Server], timeout: float = 20.0) -> None:
    """Until every node says ``cluster_state:ok``."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        if node.process is None:
            continue
        while True:
            with node.client() as client:
                if client.cluster("info").get("cluster_state") == "ok":
                    break
            if time.monotonic() > deadline:
                msg = f"cluster not ok within {timeout} s"
                raise TimeoutError(msg)
            time.sleep(0.05)


def wait_sentinel_sees(sentinel: Server, replica: Server, timeout: float = 30.0) -> None:
    """Until *sentinel* lists *replica* as a healthy replica of ``svc`` (it can fail over)."""
    deadline = time.monotonic() + timeout
    with redis.Redis(port=sentinel.port, socket_timeout=2, decode_responses=True) as client:
        while True:
            for entry in client.execute_command("SENTINEL", "REPLICAS", "svc"):
                fields = (
                    dict(zip(entry[::2], entry[1::2], strict=True))
                    if isinstance(entry, list)
                    else entry
                )
                if (
                    int(fields.get("port", 0)) == replica.port
                    and fields.get("flags") == "slave"
                    and fields.get("master-link-status") == "ok"
                ):
                    return
            if time.monotonic() > deadline:
                msg = f"Sentinel did not see the replica on port {replica.port} within {timeout} s"
                raise TimeoutError(msg)
            time.sleep(0.05)


def wait_replicated(primary: Server, replica: Server, timeout: float = 30.0) -> None:
    """Until *replica* has caught up with *primary*."""
    deadline = time.monotonic() + timeout
    with replica.client() as client:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                msg = "replica did not sync"
                raise TimeoutError(msg)
            time.sleep(0.02)
