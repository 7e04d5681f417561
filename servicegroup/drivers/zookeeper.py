"""The `zookeeper` driver (alias `zk`): liveness as znodes' mtimes, with kazoo.

Layout
    A beating service is a znode ``<root>/<binary>/<host>`` whose
    data is JSON ``{"uuid", "version", "binary", "host"}``; the uuid tells a
    live node from a stale one left by a deleted service of the same name.
    Each path component is percent-encoded (``escape()``): ``quote(name,
    safe="")`` turns '/', '%', spaces, unicode and every character ZooKeeper
    forbids into ASCII escapes, and a leading '.' becomes ``%2E``, so the
    illegal names '.' and '..' cannot occur and no escaped name starts with a
    dot. The mapping is injective. Children of ``<root>`` that start with '.'
    are the driver's own (``<root>/.clock``).

Two kinds of node (``[zookeeper] node_lifetime``)
    * ``session`` (a process beating for itself): the node is EPHEMERAL, so
      it belongs to the session of the process that wrote it, and a crash
      is seen when that session expires (below).
    * ``heartbeat`` (``servicegroup serve``, the default there): the node is
      PERSISTENT and only its age counts, as with the other drivers. A
      daemon beats on behalf of services that may reach any daemon behind a
      load balancer: an ephemeral node would vanish with the daemon that
      wrote it last, and take down services that are beating through
      another one. leave() and delete remove the node; a node an older
      session owns (the ephemeral kind) is taken over as a persistent one.

Two ways to go down
    * crash (process gone): with session nodes, ZooKeeper expires the
      session after ``[zookeeper] session_timeout`` and deletes the node;
      reads then see no node, so the service is down at once. With
      heartbeat nodes, as a hang below.
    * hang (main loop stuck while kazoo's own thread keeps the session alive):
      the node stays, but ``beat()`` is what rewrites it every
      report_interval and bumps its mtime; once nobody rewrites it, its age
      passes ``service_down_time`` and the API calls it down.
    A crashed service is down after about min(session_timeout,
    service_down_time), a hung one after service_down_time. A session timeout
    much longer than service_down_time buys nothing; a much shorter one makes
    a network blip expire sessions (nodes come back by themselves, see below).

Clock
    Ages are ZooKeeper-now minus the znode's mtime, both stamped by the
    ZooKeeper leader's clock, never the local one. The driver learns
    ZooKeeper's time from the mtime of its own writes: every beat's set_data
    returns one, and a process that only reads piggy-backs a write of
    ``<root>/.clock`` on its read pipeline at most every CLOCK_REFRESH seconds.
    It keeps ``offset = zk_time - local monotonic`` (error: half a round
    trip), so neither a skewed nor a stepped local wall clock enters.

Bulk read
    ZooKeeper 3.6+ answers a multiRead (opcode 22): many getData ops in one
    request, one reply with each op's data and Stat, or its own error (a
    missing node fails that op only). kazoo has no API for it, so MultiRead
    below is a request object for kazoo's own queue, sent as its Transaction
    is (dependency_internals.kazoo_send): it rides the session, auth and
    reconnection.
    kazoo's connection thread handles one request or reply per loop turn
    (~0.14 ms per znode as pipelined gets: 1.1-1.5 s for 10,000, during which
    a beat's set on the same session waits its turn); a few multiReads cost
    a few turns. Paths go out in chunks of at most MULTI_READ_BUDGET bytes
    (request and reply under half of jute.maxbuffer's default 1 MiB), all
    chunks before any answer is awaited. A server older than 3.6 answers
    UNIMPLEMENTED and drops the connection: that read fails (unknown, as any
    connection loss), and from then on this driver sends one pipelined get
    per service. The mtime is the same Stat field either way.

Sessions
    One KazooClient per driver. beat() is one set_data in the steady state; a
    missing node is created; a node still owned by an earlier session of the
    same service (a restart before the old session expired) is taken over by
    delete-and-create in one transaction, or it would vanish when that old
    session expires. After a session is lost, a state listener re-creates the
    nodes of every service this driver beat as soon as a new session is up,
    without waiting for the next beat. Two live processes beating the same
    binary/host take the node from each other: that is a configuration error
    in any driver.

Failure
    The client is started in __init__ but a ZooKeeper that is down at start-up
    does not fail construction: kazoo keeps reconnecting in the background
    (a daemon started during an outage must come good without a supervisor
    restart loop), and until then every call raises ConnectionLoss at once.
    Reads never wait for a connection (a question is answered now: unknown);
    writes ride out a short blip with a KazooRetry bounded by connect_timeout.
"""

from __future__ import annotations

import functools
import json
import logging
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias
from urllib.parse import quote

import orjson
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    EXCEPTIONS,
    BadVersionError,
    ConnectionLoss,
    KazooException,
    MarshallingError,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
    UnimplementedError,
)
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.protocol.serialization import int_struct, multiheader_struct, stat_struct
from kazoo.retry import KazooRetry
from oslo_config import cfg
from sqlalchemy import Engine

from servicegroup import dependency_internals
from servicegroup.clock import Clock
from servicegroup.db.records import RecordSet
from servicegroup.drivers.base import NEVER, Driver, Pulse, Reading, new_pulse
from servicegroup.exceptions import ConfigError
from servicegroup.identity_cache import IdentityCache
from servicegroup.service import Service

LOG = logging.getLogger(__name__)

CLOCK_NODE = ".clock"
# How old the ZooKeeper clock offset may get in a process that never beats.
# Beats refresh it for free; a reader pays one pipelined write this often.
CLOCK_REFRESH = 10.0
# Attempts of one write before giving up until the next beat.
WRITE_ATTEMPTS = 3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Bytes one multiRead may carry, request and reply alike (see "Bulk read").
MULTI_READ_BUDGET = 512 * 1024
# Bytes per op beyond its path: op and result headers, the Stat, and the
# JSON around binary and host in the node's data.
MULTI_READ_OP_COST = 256


# Cached: every read escapes every service's binary and host (a fleet's
# names rarely change), and quote() is most of a read's Python time.
@functools.lru_cache(maxsize=1 << 16)
def escape(name: str) -> str:
    """One znode name for one host/binary; see the module docstring."""
    if not name:
        raise ValueError("an empty name has no znode (validation forbids it)")
    escaped = quote(name, safe="")
    if escaped.startswith("."):
        escaped = "%2E" + escaped[1:]
    return escaped


def _root(value: str) -> str:
    """'' for '/', else the root without its trailing slash."""
    if not value.startswith("/"):
        raise ConfigError(f"[zookeeper] root must be an absolute znode path, not {value!r}")
    root = value.rstrip("/")
    if any(part in ("", ".", "..") for part in root.split("/")[1:]):
        raise ConfigError(f"[zookeeper] root {value!r} is not a valid znode path")
    return root


def _utc(mtime_ms: int) -> datetime:
    # Exact (integer arithmetic) and cheaper than fromtimestamp(ms / 1000).
    return EPOCH + timedelta(milliseconds=mtime_ms)


def _owner(data: bytes | None) -> str | None:
    # orjson: a read parses every node's data; same answers as json.loads.
    try:
        owner = orjson.loads(data or b"")["uuid"]
    except (ValueError, TypeError, KeyError):
        return None
    return owner if isinstance(owner, str) else None


# -- multiRead ---------------------------------------------------------------

_OP_GET_DATA = 4
_OP_ERROR = -1
_GET_DATA_HEADER = multiheader_struct.pack(_OP_GET_DATA, False, -1)
_DONE_HEADER = multiheader_struct.pack(-1, True, -1)
_MZXID_MTIME = struct.Struct("!q8xq")
_MZXID_AT = 8  # a Stat is czxid, mzxid, ctime, mtime, ...

# One op's answer: (data, mtime in ms, mzxid) or the error ZooKeeper gave that op.
Got: TypeAlias = tuple[bytes, int, int] | KazooException


class MultiRead:
    """A ZooKeeper multiRead of getData ops, as a request kazoo's connection can send.

    kazoo needs `type`, serialize() and deserialize(buffer, offset) (its own
    request records are alike); the reply is parsed on kazoo's connection
    thread, so it keeps only what read() uses: data, mtime and mzxid. A reply that
    does not fit the request raises MarshallingError, a KazooException, so
    the read is unknown like any other backend failure.
    """

    type = 22
    __slots__ = ("paths",)

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __repr__(self) -> str:  # kazoo logs requests
        return f"MultiRead({len(self.paths)} paths)"

    def serialize(self) -> bytes:
        parts: list[bytes] = []
        for path in self.paths:
            encoded = path.encode()
            parts += (_GET_DATA_HEADER, int_struct.pack(len(encoded)), encoded, b"\0")
        parts.append(_DONE_HEADER)
        return b"".join(parts)

    def deserialize(self, buffer: bytes, offset: int) -> list[Got]:
        header, length = multiheader_struct.unpack_from, int_struct.unpack_from
        stamps, stat_size = _MZXID_MTIME.unpack_from, stat_struct.size
        results: list[Got] = []
        while True:
            op, done, _err = header(buffer, offset)
            offset += multiheader_struct.size
            if done:
                break
            if op == _OP_GET_DATA:
                size = length(buffer, offset)[0]
                offset += 4
                data = buffer[offset : offset + size] if size > 0 else b""
                offset += max(size, 0)
                mzxid, mtime = stamps(buffer, offset + _MZXID_AT)
                results.append((data, mtime, mzxid))
                offset += stat_size
            elif op == _OP_ERROR:
                results.append(EXCEPTIONS[length(buffer, offset)[0]]())
                offset += 4
            else:
                raise MarshallingError(f"multiRead answered an op of type {op}")
        if len(results) != len(self.paths):
            raise MarshallingError(f"multiRead answered {len(results)} of {len(self.paths)} ops")
        return results


def chunks(paths: list[str], budget: int) -> list[list[str]]:
    """Paths cut into multiReads of at most `budget` bytes each (one path at least)."""
    out: list[list[str]] = []
    start, used = 0, 0
    for i, path in enumerate(paths):
        cost = len(path) + MULTI_READ_OP_COST
        if used + cost > budget and i > start:
            out.append(paths[start:i])
            start, used = i, 0
        used += cost
    if start < len(paths):
        out.append(paths[start:])
    return out


# Bytes of set_data ops per multi: request and reply under half of
# jute.maxbuffer's default 1 MiB, as for multiRead.
MULTI_WRITE_BUDGET = 512 * 1024


def _write_chunks(nodes: list[_Node]) -> list[list[_Node]]:
    """Nodes cut into multis of at most MULTI_WRITE_BUDGET bytes (one node at least)."""
    out: list[list[_Node]] = []
    chunk: list[_Node] = []
    used = 0
    for node in nodes:
        cost = len(node.path) + len(node.data) + MULTI_READ_OP_COST
        if chunk and used + cost > MULTI_WRITE_BUDGET:
            out.append(chunk)
            chunk, used = [], 0
        chunk.append(node)
        used += cost
    if chunk:
        out.append(chunk)
    return out


@dataclass(frozen=True, slots=True)
class _Node:
    service: Service
    path: str
    data: bytes


class ZooKeeperDriver(Driver):
    name = "zookeeper"
    backend = "ZooKeeper"
    # KazooTimeoutError (a request outlived connect_timeout) is not a KazooException.
    backend_errors = (KazooException, KazooTimeoutError)

    def __init__(self, conf: cfg.ConfigOpts, engine: Engine, clock: Clock) -> None:
        super().__init__(conf, engine, clock)
        opts = conf.zookeeper
        self.hosts: list[str] = list(opts.hosts)
        self.root = _root(opts.root)
        # See "Two kinds of node"; unset means a process beating for itself.
        self.ephemeral = (opts.node_lifetime or "session") == "session"
        self.timeout: float = opts.connect_timeout
        # uuid -> the node this process beats, re-created after a session loss;
        # pruned of deleted services like every identity cache.
        self._nodes: IdentityCache[_Node] = self.identity_cache()
        self._forget_lock = threading.Lock()
        # (zk_seconds - local monotonic, monotonic when sampled)
        self._offset: tuple[float, float] | None = None
        self._session_lost = False
        # False once a server said it has no multiRead (older than 3.6).
        self._multi_read = True
        # uuid -> (mzxid, Pulse) of the last read: a node read again
        # unchanged gets the same Pulse, without parsing its data and
        # converting its mtime again (a third of a 10,000-node read's Python).
        # mzxid names the node's content: every create and set gives a new
        # one. Keyed on (mtime, data) instead, the table held every node's
        # data, 34 MB at 100,000 services.
        self._pulses: IdentityCache[tuple[int, Pulse]] = self.identity_cache()
        handler = SequentialThreadingHandler()
        self._client = KazooClient(
            hosts=",".join(self.hosts),
            timeout=opts.session_timeout,
            handler=handler,
            # Reconnect forever (a bounded policy closes the client for good),
            # but never sleep so long between attempts that a ZooKeeper that
            # is back expires our session before we knock again.
            connection_retry=KazooRetry(
                max_tries=-1,
                delay=0.05,
                max_delay=max(0.05, min(self.timeout, opts.session_timeout / 3)),
                sleep_func=handler.sleep_func,
            ),
            # client.retry(): writes ride out a blip, never beyond connect_timeout.
            command_retry=KazooRetry(
                max_tries=10,
                delay=0.02,
                max_delay=max(0.02, self.timeout / 4),
                deadline=self.timeout,
                sleep_func=handler.sleep_func,
            ),
        )
        self._client.add_listener(self._on_state)
        self._client.start_async().wait(self.timeout)
        if not self._client.connected:
            LOG.warning(
                "ZooKeeper at %s did not answer within %gs; retrying in the background",
                ",".join(self.hosts),
                self.timeout,
            )

    # -- Driver ----------------------------------------------------------------

    def beat(self, service: Service) -> None:
        self._client.retry(self._put, self._node_for(service))

    def beat_many(self, services: Sequence[Service]) -> dict[str, BaseException]:
        """One multi of set_data ops per MULTI_WRITE_BUDGET bytes; pipelined writes if it fails.

        A multi is one request and one reply for the whole batch, and one
        proposal on the ZooKeeper side; kazoo's connection thread handles
        one request or reply per loop turn, so a request per service cost
        the daemon ~600 us a beat (bench/fleet.py, 100,000 services). A
        multi fails whole when one op fails (a node not created yet, after
        a start or a session loss): then the batch goes out as one set_data
        per service, all sent before any answer is awaited, where a missing
        node spoils nothing. Rides out a connection blip as beat() does:
        the batch is sent again, bounded by connect_timeout.
        """
        nodes = list({service.uuid: self._node_for(service) for service in services}.values())
        failed: dict[str, BaseException] = self._client.retry(self._put_many, nodes)
        return failed

    def read(self, recordset: RecordSet) -> Reading:
        # Everything goes out before any answer is awaited: one pipelined
        # round trip for any number of services. No get_children first: it
        # would be another round trip and tells nothing the reads do not (a
        # child list has no mtimes).
        self._require_connected()
        # "Now" is when the reads went out: a long read must not age the
        # services whose answers came back last.
        sent_at = self.clock.monotonic()
        deadline = sent_at + self.timeout
        clock_sample = self._clock_write_if_due()
        services = recordset.services
        paths = [self._path(svc.binary, svc.host) for svc in services]
        got = (
            self._read_multi(paths, deadline)
            if self._multi_read
            else self._read_gets(paths, deadline)
        )
        pulses: dict[str, Pulse] = {}
        last = self._pulses.for_read()
        for svc, answer in zip(services, got, strict=True):
            if isinstance(answer, tuple):
                data, mtime, mzxid = answer
                seen = last.get(svc.uuid)
                if seen is not None and seen[0] == mzxid:
                    pulses[svc.uuid] = seen[1]
                    continue
                # A node of another uuid is a deleted namesake's, not this service's.
                pulse = new_pulse(_utc(mtime)) if _owner(data) == svc.uuid else NEVER
                pulses[svc.uuid] = pulse
                last[svc.uuid] = (mzxid, pulse)
            elif isinstance(answer, NoNodeError):
                pulses[svc.uuid] = NEVER
            else:
                raise answer
        if clock_sample is not None:
            self._clock_finish(*clock_sample, deadline)
        return Reading(now=self._zk_now(sent_at), pulses=pulses)

    def forget(self, service: Service) -> None:
        with self._forget_lock:
            self._nodes.discard(service.uuid)
            self._client.retry(self._delete, self._path(service.binary, service.host), service.uuid)

    def ping(self) -> None:
        self._require_connected()
        self._client.exists_async(self.root or "/").get(timeout=self.timeout)

    def describe(self) -> dict[str, Any]:
        client_id = self._client.client_id
        return {
            "hosts": self.hosts,
            "root": self.root or "/",
            "state": str(self._client.state).lower(),
            "session_id": None if client_id is None else f"0x{client_id[0]:x}",
        }

    def close(self) -> None:
        # stop() closes the session, so our ephemeral nodes (if any) go at once.
        try:
            self._client.stop()
        finally:
            self._client.close()

    # -- reads -----------------------------------------------------------------

    def _read_multi(self, paths: list[str], deadline: float) -> list[Got]:
        """Every path's data, mtime and mzxid, in multiReads sent before any answer is awaited."""
        chroot = self._client.chroot
        pending = []
        for chunk in chunks(paths, MULTI_READ_BUDGET):
            result = self._client.handler.async_result()
            request = MultiRead([chroot + p for p in chunk] if chroot else chunk)
            dependency_internals.kazoo_send(self._client, request, result)
            pending.append(result)
        got: list[Got] = []
        try:
            for result in pending:
                got += result.get(timeout=self._left(deadline))
        except UnimplementedError:
            # The server also drops the connection, so this read is lost;
            # the next ones use gets.
            self._multi_read = False
            LOG.warning(
                "ZooKeeper at %s has no multiRead (older than 3.6): reading with one get "
                "per service from now on",
                ",".join(self.hosts),
            )
            raise
        return got

    def _read_gets(self, paths: list[str], deadline: float) -> list[Got]:
        """The same answers as _read_multi, from one pipelined getData per path."""
        pending = [self._client.get_async(path) for path in paths]
        got: list[Got] = []
        for result in pending:
            # A missing node is looked at, not raised: a raised exception's
            # traceback holds this frame and so the whole read in a cycle,
            # kept until a full collection (measured: three reads' worth).
            if result.wait(self._left(deadline)) and isinstance(result.exception, NoNodeError):
                got.append(result.exception)
                continue
            data, stat = result.get(timeout=self._left(deadline))
            got.append((data, stat.mtime, stat.mzxid))
        return got

    # -- writes ----------------------------------------------------------------

    def _put(self, node: _Node) -> None:
        """set_data; create if missing; take over a node an older session still owns."""
        for _ in range(WRITE_ATTEMPTS):
            session = self._session_id()
            started = self.clock.monotonic()
            try:
                stat = self._client.set_async(node.path, node.data).get(timeout=self.timeout)
            except NoNodeError:
                try:
                    _path, stat = self._client.create_async(
                        node.path,
                        node.data,
                        ephemeral=self.ephemeral,
                        makepath=True,
                        include_data=True,
                    ).get(timeout=self.timeout)
                except NodeExistsError:
                    continue  # someone (our session listener) was quicker: set it
            else:
                if stat.ephemeralOwner != self._owner_of_ours(session):
                    if self._take_over(node, stat.version):
                        return
                    continue
            self._sample(stat.mtime, started, self.clock.monotonic())
            return
        raise NodeExistsError(f"{node.path} kept changing hands; retrying at the next beat")

    def _put_many(self, nodes: list[_Node]) -> dict[str, BaseException]:
        """_put for many nodes: multis, else pipelined set_data; a node that needs more: _put.

        Raises ConnectionLoss when the connection failed under any of them,
        so that client.retry sends the whole batch again (set_data twice is
        harmless: a heartbeat's only effect is the mtime).
        """
        if self._put_multi(nodes):
            return {}
        session = self._session_id()
        started = self.clock.monotonic()
        deadline = started + self.timeout
        pending = [(node, self._client.set_async(node.path, node.data)) for node in nodes]
        failed: dict[str, BaseException] = {}
        sampled = False
        for node, result in pending:
            try:
                stat = result.get(timeout=self._left(deadline))
                if stat.ephemeralOwner != self._owner_of_ours(session):
                    self._put(node)  # an older session's node: take it over
                elif not sampled:
                    self._sample(stat.mtime, started, self.clock.monotonic())
                    sampled = True
            except NoNodeError:
                try:
                    self._put(node)  # first beat since start or a session loss: create
                except self.backend_errors as exc:
                    failed[node.service.uuid] = exc
            except (ConnectionLoss, SessionExpiredError):
                raise
            except self.backend_errors as exc:
                failed[node.service.uuid] = exc
        return failed

    def _put_multi(self, nodes: list[_Node]) -> bool:
        """set_data for every node in multis; False when an op failed (nothing was written)."""
        session = self._session_id()
        started = self.clock.monotonic()
        pending = []
        for chunk in _write_chunks(nodes):
            tx = self._client.transaction()
            for node in chunk:
                tx.set_data(node.path, node.data)
            pending.append((chunk, tx.commit_async()))
        done = True
        for chunk, result in pending:
            answers = result.get(timeout=self._left(started + self.timeout))
            if any(isinstance(answer, Exception) for answer in answers):
                done = False  # NoNode most likely; the fallback finds out which
                continue
            for node, stat in zip(chunk, answers, strict=True):
                if stat.ephemeralOwner != self._owner_of_ours(session):
                    self._put(node)  # an older session's node: take it over
        if done and pending:
            self._sample(pending[0][1].get()[0].mtime, started, self.clock.monotonic())
        return done

    def _owner_of_ours(self, session: int) -> int:
        """The ephemeralOwner our nodes have: our session's, or 0 for persistent ones."""
        return session if self.ephemeral else 0

    def _take_over(self, node: _Node, version: int) -> bool:
        """Re-create as ours a node an older session owns; False if it moved meanwhile."""
        tx = self._client.transaction()
        tx.delete(node.path, version=version)
        tx.create(node.path, node.data, ephemeral=self.ephemeral)
        results = tx.commit_async().get(timeout=self.timeout)
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return True
        if isinstance(failures[0], BadVersionError | NoNodeError | NodeExistsError):
            return False
        raise failures[0]

    def _delete(self, path: str, uuid: str) -> None:
        """Delete the node if it is this service's, even if the API lost the race with a beat."""
        self._require_connected()
        for _ in range(WRITE_ATTEMPTS):
            try:
                data, stat = self._client.get_async(path).get(timeout=self.timeout)
                if _owner(data) not in (uuid, None):
                    return  # a namesake registered since owns it
                self._client.delete_async(path, version=stat.version).get(timeout=self.timeout)
                return
            except NoNodeError:
                return
            except BadVersionError:
                continue
        raise BadVersionError(f"{path} kept changing while being deleted")

    # -- session ---------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        # Runs on kazoo's connection thread: must not block, so the
        # re-creation runs on a thread of its own.
        if state == KazooState.LOST:
            self._session_lost = True
        elif state == KazooState.CONNECTED and self._session_lost:
            self._session_lost = False
            if self.ephemeral:  # persistent nodes outlive a session
                self._client.handler.spawn(self._recreate)

    def _recreate(self) -> None:
        """A new session owns nothing: put back every node we were beating."""
        for uuid in list(self._nodes.entries):
            with self._forget_lock:
                node = self._nodes.entries.get(uuid)
                if node is None:
                    continue  # forgotten meanwhile
                try:
                    self._client.retry(self._put, node)
                except Exception as exc:  # the next beat tries again; the reporter logs it
                    LOG.debug("re-creating %s after session loss failed: %s", node.path, exc)

    def _session_id(self) -> int:
        client_id = self._client.client_id
        if client_id is None:
            raise self._not_connected()
        session_id: int = client_id[0]
        return session_id

    def _require_connected(self) -> None:
        if not self._client.connected:
            raise self._not_connected()

    def _not_connected(self) -> ConnectionLoss:
        state = str(self._client.state).lower()
        return ConnectionLoss(f"not connected to ZooKeeper at {','.join(self.hosts)} ({state})")

    # -- clock -----------------------------------------------------------------

    def _sample(self, mtime_ms: int, sent: float, answered: float) -> None:
        """Our write was stamped mtime between `sent` and `answered`: take the middle."""
        self._offset = (mtime_ms / 1000.0 - (sent + answered) / 2.0, answered)

    def _clock_write_if_due(self) -> tuple[Any, float, list[float]] | None:
        """Start a write of <root>/.clock when the offset is stale, in the read's pipeline."""
        offset = self._offset
        sent = self.clock.monotonic()
        if offset is not None and sent - offset[1] < CLOCK_REFRESH:
            return None
        answered: list[float] = []
        result = self._client.set_async(self._clock_path, b"")
        # Stamp the answer when it arrives, not when read() gets round to it
        # after collecting every get.
        result.rawlink(lambda _result: answered.append(self.clock.monotonic()))
        return result, sent, answered

    def _clock_finish(
        self, result: Any, sent: float, answered: list[float], deadline: float
    ) -> None:
        try:
            stat = result.get(timeout=self._left(deadline))
        except NoNodeError:  # first reader ever under this root
            sent = self.clock.monotonic()
            try:
                _path, stat = self._client.create_async(
                    self._clock_path, b"", makepath=True, include_data=True
                ).get(timeout=self._left(deadline))
            except NodeExistsError:
                stat = self._client.set_async(self._clock_path, b"").get(
                    timeout=self._left(deadline)
                )
            answered = []
        self._sample(stat.mtime, sent, answered[0] if answered else self.clock.monotonic())

    def _zk_now(self, at: float) -> datetime:
        """ZooKeeper's time at local monotonic instant `at`."""
        offset = self._offset
        assert offset is not None  # read() sampled it if it was missing
        return datetime.fromtimestamp(at + offset[0], UTC)

    # -- paths -----------------------------------------------------------------

    @property
    def _clock_path(self) -> str:
        return f"{self.root}/{CLOCK_NODE}"

    def _path(self, binary: str, host: str) -> str:
        return f"{self.root}/{escape(binary)}/{escape(host)}"

    def _node_for(self, service: Service) -> _Node:
        """The node this process beats for `service`, kept for re-creation after a session loss."""
        node = self._nodes.entries.get(service.uuid)
        if node is None or node.service is not service:
            node = self._node(service)
            self._nodes.entries[service.uuid] = node
        return node

    def _node(self, service: Service) -> _Node:
        data = {
            "uuid": service.uuid,
            "version": service.version,
            "binary": service.binary,
            "host": service.host,
        }
        return _Node(service, self._path(service.binary, service.host), json.dumps(data).encode())

    def _left(self, deadline: float) -> float:
        return max(0.0, deadline - self.clock.monotonic())
