"""
The asyncio path to a Redis Cluster: each script sent straight to the primary of its slot.

Every script of ours touches the keys of one hash tag, so one slot, so one primary. Instead
of the client library's asyncio cluster client, a ``ClusterRouter`` (one per event loop)
keeps the slot map itself and a few connections per primary (the library's own asyncio
connections, made with the cluster client's settings: TLS, credentials, client name,
protocol), each used by one caller at a time and dropped after any failure. It reads
the map with ``CLUSTER SLOTS`` from any node that answers, follows ``MOVED`` (the script did
not run: it is sent again to the new owner, and the whole map is read again soon after) and
``ASK`` (``ASKING`` and the script on one connection to the importing node), and reads the map
again after a connection error or a timeout. It never retries a script that may have run.

Why not ``redis.asyncio.RedisCluster``: in redis-py 8.0 and 8.1, commands issued while that
client (re)initialises are routed before it knows the slot map, to its default node; their
``MOVED`` answers make it close every connection (``aclose()`` every fifth redirect), also
those other tasks are waiting on, whose scripts may already have run; each lost connection
then makes it disconnect the node's "free" connections while other tasks take them from the
pool. Under many concurrent tasks replies are lost ("Connection closed by server",
``'NoneType' object has no attribute 'writelines'``) for scripts that ran. Here a connection
is only ever closed by the one caller holding it.

Only ``stores._redis`` imports this module, when an asyncio call first meets a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


__all__ = ["ClusterRouter"]

_SLOTS = 16384
#: Redirections (MOVED, ASK) one script follows before giving up.
_REDIRECTS = 5
#: The least seconds between two reads of the slot map asked for by errors.
_REFRESH_EVERY = 0.05

Address = tuple[str, int]


class _Node:
    """
    Connections to one node, each held by one caller at a time (at most *size* at once).

    A connection goes back to the pool only after a whole exchange (an error *reply*
    included: the connection is still in step); after any other failure (a lost
    connection, a timeout, a cancellation) it is closed by its holder and forgotten, so no
    other caller can meet it half-used.
    """

    def __init__(self, make: Callable[[], Any], size: int, response_error: type[Exception]):
        self._make = make
        self._free: list[Any] = []
        self._room = asyncio.Semaphore(size)
        self._response_error = response_error
        self._closed = False

    async def call(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send *commands* on one connection; return their replies (or raise the first error)."""
        async with self._room:
            connection = self._free.pop() if self._free else self._make()
            replies: list[Any] = []
            try:
                if len(commands) == 1:
                    packed = connection.pack_command(*commands[0])
                else:
                    packed = connection.pack_commands(commands)
                await connection.send_packed_command(packed)
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except self._response_error as error:  # an error reply: still in step
                        replies.append(error)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)
                raise
            if self._closed:
                await connection.disconnect()
            else:
                self._free.append(connection)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def aclose(self) -> None:
        """Close the idle connections; those in use are closed when their holder is done."""
        self._closed = True
        free, self._free = self._free, []
        for connection in free:
            with contextlib.suppress(Exception):
                await connection.disconnect()


class ClusterRouter:
    """
    One event loop's way to a cluster: the slot map and a few connections per primary.

    Args:
        lib: ``redis`` or ``valkey``, the library of the user's cluster client.
        seeds: Nodes to read the slot map from first (the cluster client's).
        connection_class: The asyncio connection class for every node (TLS or not).
        settings: Connection settings (no host nor port) for every node.
        max_connections: The most connections open to one node; more callers queue (for
            as long as the caller's own deadline allows).
        remap: The cluster client's ``address_remap`` (behind NAT or a proxy), if any.
    """

    def __init__(
        self,
        lib: ModuleType,
        seeds: Sequence[Address],
        *,
        connection_class: type[Any],
        settings: dict[str, Any],
        max_connections: int,
        remap: Callable[[Address], Address] | None = None,
    ) -> None:
        self._errors = lib.exceptions
        crc = importlib.import_module(f"{lib.__name__}.crc")
        self._key_slot: Callable[[bytes], int] = crc.key_slot
        self._seeds = list(dict.fromkeys(seeds))
        self._connection_class = connection_class
        # No retry of its own: a script whose reply was lost may have run.
        retry = lib.asyncio.retry.Retry(lib.backoff.NoBackoff(), 0)
        self._settings = {**settings, "retry": retry}
        self._max_connections = max_connections
        self._remap = remap
        self._nodes: dict[Address, _Node] = {}
        self._slots: list[Address | None] = [None] * _SLOTS
        self._stale = True
        self._refreshed = -_REFRESH_EVERY
        self._generation = 0
        self._failed: dict[Address, None] = {}  # nodes that failed last: asked last
        self._lock = asyncio.Lock()

    # -- nodes and the slot map ---------------------------------------------------------------

    def node(self, address: Address) -> _Node:
        """The connections to the node at *address* (a pool made on first use)."""
        node = self._nodes.get(address)
        if node is None:
            settings = {**self._settings, "host": address[0], "port": address[1]}
            node = self._nodes[address] = _Node(
                lambda: self._connection_class(**settings),
                self._max_connections,
                self._errors.ResponseError,
            )
        return node

    def _address(self, host: Any, port: Any, asked: Address) -> Address:
        text = host.decode() if isinstance(host, bytes) else str(host or "")
        if text in ("", "?"):  # the node does not know its own address: the one we asked
            text = asked[0]
        address = (text, int(port))
        return self._remap(address) if self._remap is not None else address

    async def _refresh(self, *, forced: bool) -> None:
        """
        Read the slot map again from the first node that answers (single-flight).

        Unless *forced* (no owner known for a slot), a refresh asked for within
        ``_REFRESH_EVERY`` of the last one is skipped, and a failed one keeps the old map.
        """
        generation = self._generation
        async with self._lock:
            loop = asyncio.get_running_loop()
            if generation != self._generation:
                return  # another caller read it while this one waited
            if not forced and loop.time() - self._refreshed < _REFRESH_EVERY:
                return
            known = list(dict.fromkeys(a for a in self._slots if a is not None))
            candidates = [a for a in dict.fromkeys([*known, *self._seeds]) if a not in self._failed]
            candidates += [a for a in self._failed if a not in candidates]
            error: BaseException | None = None
            for address in candidates:
                try:
                    (reply,) = await self.node(address).call(("CLUSTER", "SLOTS"))
                except (self._errors.ConnectionError, self._errors.TimeoutError, OSError) as e:
                    self._failed[address] = None
                    error = e
                    continue
                except asyncio.CancelledError:  # out of time on this one: asked last next time
                    self._failed[address] = None
                    raise
                slots: list[Address | None] = [None] * _SLOTS
                for entry in reply:
                    start, end, primary = int(entry[0]), int(entry[1]), entry[2]
                    owner = self._address(primary[0], primary[1], address)
                    slots[start : end + 1] = [owner] * (end - start + 1)
                self._slots = slots
                self._stale = False
                self._refreshed = loop.time()
                self._generation += 1
                self._failed.pop(address, None)
                return
            self._refreshed = loop.time()
            if forced and error is not None:
                raise error
            if forced:
                msg = "no node of the cluster to read its slot map from"
                raise self._errors.ConnectionError(msg)

    async def _owner(self, slot: int) -> Address:
        if self._stale or self._slots[slot] is None:
            await self._refresh(forced=self._slots[slot] is None)
        owner = self._slots[slot]
        if owner is None:
            msg = f"slot {slot} is not covered by any node of the cluster"
            raise self._errors.SlotNotCoveredError(msg)
        return owner

    # -- running a script ---------------------------------------------------------------------

    async def run(self, source: str, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the Lua *source* (EVALSHA, else EVAL) on the primary of *keys*' one slot."""
        # Ours touch one slot; a script with no key runs on any primary (slot 0's).
        slot = self._key_slot(keys[0].encode()) if keys else 0
        target = await self._owner(slot)
        asking = False
        last: BaseException | None = None
        for _ in range(_REDIRECTS):
            node = self.node(target)
            try:
                if asking:
                    ask = ("ASKING",)
                    reply = (await node.call(ask, ("EVAL", source, len(keys), *keys, *args)))[1]
                else:
                    try:
                        (reply,) = await node.call(("EVALSHA", sha, len(keys), *keys, *args))
                    except self._errors.NoScriptError:
                        (reply,) = await node.call(("EVAL", source, len(keys), *keys, *args))
            except self._errors.MovedError as moved:  # not run: the slot has a new owner
                target = self._address(moved.host, moved.port, target)
                self._slots[slot] = target
                self._stale = True  # its other slots probably moved too: read the map soon
                asking = False
                last = moved
                continue
            except self._errors.AskError as ask:  # not run: the slot is being migrated
                target = self._address(ask.host, ask.port, target)
                asking = True
                last = ask
                continue
            except (self._errors.ConnectionError, self._errors.TimeoutError, OSError):
                self._failed[target] = None
                self._stale = True  # a dead or failed-over primary: read the map next time
                raise
            except asyncio.CancelledError:  # the caller's deadline, maybe a paused primary:
                self._failed[target] = None  # asked last for the map, nothing more
                raise
            self._failed.pop(target, None)
            return reply
        msg = f"more than {_REDIRECTS} redirections for slot {slot} (the last: {last})"
        raise self._errors.ResponseError(msg) from last

    async def aclose(self) -> None:
        """Close every node's connections."""
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.aclose()
