"""The `tooz` driver: liveness as group membership on any tooz backend.

Group = binary, member = one service: ``<host>@<binary>`` (both escaped), with
capabilities ``{uuid, version}``. A beat is the coordinator's heartbeat().

What "up" means here: the member is in its group. Each backend expires
members itself, so the driver tunes that expiry to service_down_time when it
builds the URL (redis ``membership_timeout``, zookeeper session ``timeout``,
etcd3/memcached ``membership_timeout``) unless the operator set it. tooz gives
no beat time, so a present member's last_heartbeat is when its group was
read: the API judges age ~0 -> up, absent -> down. The redis beat key's TTL would
give a real beat time, but only by reaching into tooz's private key layout
and client for one backend; not worth a second, fragile code path.

Why the member is per service, not per host: tooz keeps ONE liveness signal
per member id (redis: one ``<ns>_beats:<member>`` key; zookeeper: one
session). With member = host, a crashed conductor stays up for as long as
the compute on the same host beats the shared key. So every service gets
its own coordinator, lazily created and cached by (host, binary). The cost,
for a daemon that beats many services: one coordinator each, or one ZooKeeper
session with kazoo's threads, per service. On redis the coordinators of one
driver share one redis-py client, so one connection pool, sized by how many
beats run at once, not by the number of services (see _RedisClients). Reads
use one extra coordinator with a member id no escaped name can take
(``%reader-...``).

Silence must mean down on every backend, but a ZooKeeper session (kept alive
by kazoo in the background) outlives a stopped reporter. So an expiry thread
stops any coordinator that has not beaten for service_down_time, which
leaves its groups: a silent service goes down after service_down_time
whatever the backend, and a crashed one when the backend expires it.

close() stops every coordinator, and tooz's stop() leaves the joined groups:
closing a ServiceGroup is a process exit, so its services go down at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import tooz
from oslo_config import cfg
from sqlalchemy import Engine
from tooz import coordination

from servicegroup import dependency_internals
from servicegroup.binary_times import BinaryTimes
from servicegroup.clock import Clock
from servicegroup.db.records import RecordSet
from servicegroup.drivers.base import Driver, Pulse, Reading
from servicegroup.exceptions import ConfigError
from servicegroup.service import Service

LOG = logging.getLogger(__name__)
# Members beaten at once by beat_many: round trips overlap, few enough not
# to convoy on the GIL (the daemon's former heartbeat threads, measured).
BEAT_THREADS = 8


def _errors() -> tuple[type[BaseException], ...]:
    # Some tooz calls let the client library's own errors through (the redis
    # driver's futures do not translate them), so those count as backend
    # failures too, when the library is installed.
    errors: list[type[BaseException]] = [tooz.ToozError]
    try:
        import redis

        errors.append(redis.RedisError)
    except ImportError:  # pragma: no cover - redis is optional
        pass
    from kazoo.exceptions import KazooException
    from kazoo.handlers.threading import KazooTimeoutError

    errors += [KazooException, KazooTimeoutError]
    return tuple(errors)


def escape(name: str) -> str:
    """An ASCII id without '/', '@' or a bare '.'/'..': safe as a znode name and a redis key."""
    quoted = quote(name, safe="")
    return quoted.replace(".", "%2E") if not quoted.strip(".") else quoted


# Remembered: a read looks up every service's member id, and quote() costs
# several times the lookup (at 10,000 services, a third of the read's Python).
@functools.lru_cache(maxsize=1 << 16)
def member_id(host: str, binary: str) -> bytes:
    return f"{escape(host)}@{escape(binary)}".encode("ascii")


def group_id(binary: str) -> bytes:
    return escape(binary).encode("ascii")


def coordination_url(
    url: str, down_time: float, request_timeout: float, *, reader: bool = False
) -> str:
    """backend_url with membership expiry set from service_down_time, unless already set.

    Parameter names and types follow tooz's drivers: redis takes a float
    membership_timeout (its `timeout` is int() and only feeds defaults, so it
    is left alone); zookeeper's int `timeout` is the session timeout (and
    the connect timeout of start(), hence a short one for the reader, which
    never joins); etcd3 and memcached take an int membership_timeout. Int
    parameters round up, so no service is ever called down early.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    scheme = parts.scheme
    derived: dict[str, str] = {}
    if scheme == "redis":
        derived["membership_timeout"] = repr(float(down_time))
        # Run requests in the calling thread: tooz's default worker thread
        # costs a thread per coordinator and a second to stop, and redis
        # requests are sequential on it anyway.
        derived["executor"] = "synchronous"
        derived["socket_timeout"] = repr(float(request_timeout))
        derived["socket_connect_timeout"] = repr(float(request_timeout))
    elif scheme in ("zookeeper", "kazoo"):
        seconds = request_timeout if reader else down_time
        derived["timeout"] = str(max(1, math.ceil(seconds)))
    elif scheme in ("etcd3+http", "etcd3+https", "memcached"):
        derived["membership_timeout"] = str(max(1, math.ceil(down_time)))
    query += [(key, value) for key, value in derived.items() if key not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = [
        (key, "***" if "password" in key.lower() else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def _no_retry(client: Any) -> None:
    """No redis-py retries under tooz's own: together they stall a call on a dead server.

    redis-py (>= 6) retries each command 3 times with up to seconds of
    backoff, and tooz retries connection errors 15 times around that: a
    heartbeat to a stopped Redis took over 40 s. tooz passes no retry option
    to the client, so the client it builds gets a no-retry policy here; tooz's
    own retries on refused connections stay (they are instant).
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client.set_retry(Retry(NoBackoff(), 0))


class _RedisClients:
    """One redis-py client per URL, shared by all of one driver's redis coordinators.

    A redis coordinator is cheap; its client is not. Measured with redis-py
    8.1 / tooz 9.1, 500 coordinators each with its own client cost ~60 KB of
    RSS apiece, ~5.7 KB once they share one client and keep no INFO reply:
    every redis.Redis copies the ~300 response callbacks into a dict of its
    own (~13 KB), and has its own connection pool and event dispatcher
    (~8 KB); tooz keeps the whole INFO reply of each start (~23 KB) although
    it only reads redis_version, once, in start().

    Sharing is safe: a redis.Redis is thread-safe (a command takes a
    connection from the pool and gives it back, so concurrent beats use
    separate connections, as many as beat at once rather than one per
    service), tooz keeps all per-member state (member id, beat key, scripts)
    in the coordinator, and tooz's stop() only drops its reference to the
    client, it never closes it. Each member still beats its own key and
    expires on its own.

    tooz's private parts are used through dependency_internals (guarded:
    without them a coordinator keeps its own client, as tooz builds it).
    """

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def adopt(self, coord: coordination.CoordinationDriver, url: str) -> bool:
        """Before start(): make a redis coordinator take the shared client for url."""

        def shared(build: Callable[[], Any]) -> Any:
            with self._lock:
                client = self._clients.get(url)
                if client is None:
                    client = build()
                    _no_retry(client)
                    self._clients[url] = client
                return client

        return dependency_internals.tooz_redis_share_client(coord, shared)

    @staticmethod
    def trim(coord: coordination.CoordinationDriver) -> None:
        """After start(): keep only the part of the INFO reply tooz reads."""
        dependency_internals.tooz_redis_trim_info(coord)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # pragma: no cover - closing only drops sockets
                LOG.debug("closing redis client failed: %s", exc)


class _Member:
    """One beating service: its own coordinator, and what we know of its membership."""

    def __init__(
        self, coord: coordination.CoordinationDriver, service: Service, down_time: float
    ) -> None:
        self.coord = coord
        # Its binary's own ([binaries]): the backend expires it after this long.
        self.down_time = down_time
        self.kazoo = dependency_internals.tooz_kazoo_client(coord)
        self.group = group_id(service.binary)
        self.member_id = member_id(service.host, service.binary)
        self.lock = threading.Lock()
        # Capabilities last written; None until the first join.
        self.caps: dict[str, Any] | None = None
        self.suspect = False  # a beat failed: verify membership on the next one
        self.verify_at = 0.0
        self.last_ok = 0.0
        self.closed = False


_ABSENT = object()


class ToozDriver(Driver):
    name = "tooz"
    backend = "tooz"
    backend_errors = _errors()
    # A present member's last_heartbeat is the read's time (module docstring).
    beat_times = False

    def __init__(self, conf: cfg.ConfigOpts, engine: Engine, clock: Clock) -> None:
        super().__init__(conf, engine, clock)
        url = conf.tooz.backend_url
        scheme = urlsplit(url).scheme
        # Names only: loading every tooz backend would import (and log about)
        # client libraries this deployment does not have.
        known = {ep.name for ep in entry_points(group="tooz.backends")}
        if scheme not in known:
            raise ConfigError(
                f"tooz.backend_url: unknown tooz backend {scheme!r}; "
                f"installed: {', '.join(sorted(known))}"
            )
        self.times = BinaryTimes.from_conf(conf)
        self.down_time = self.times.default_down_time
        self.timeout: float = conf.tooz.request_timeout
        self._base_url = url
        self.url = coordination_url(url, self.down_time, self.timeout)
        self.reader_url = coordination_url(url, self.down_time, self.timeout, reader=True)
        self._members: dict[tuple[str, str], _Member] = {}
        self._lock = threading.Lock()
        self._reader: coordination.CoordinationDriver | None = None
        self._reader_lock = threading.Lock()
        self._closed = threading.Event()
        self._expirer: threading.Thread | None = None
        self._redis = _RedisClients()
        self._beat_pool: ThreadPoolExecutor | None = None

    # -- beat ------------------------------------------------------------------

    def beat_many(self, services: Sequence[Service]) -> dict[str, BaseException]:
        """Each member's own heartbeat(), BEAT_THREADS at a time.

        tooz has no batch: every member is its own coordinator (module
        docstring), so the most its API allows is overlapping their round
        trips, as the daemon's heartbeat threads did before group commit.
        """
        if len(services) < 2:
            return super().beat_many(services)
        with self._lock:
            if self._beat_pool is None:
                self._beat_pool = ThreadPoolExecutor(BEAT_THREADS, thread_name_prefix="tooz-beat")
            pool = self._beat_pool
        unique = list({service.uuid: service for service in services}.values())
        answers = pool.map(lambda service: super(ToozDriver, self).beat_many([service]), unique)
        failed: dict[str, BaseException] = {}
        for answer in answers:
            failed.update(answer)
        return failed

    def beat(self, service: Service) -> None:
        caps = {"uuid": service.uuid, "version": service.version}
        while True:
            member = self._member(service)
            with member.lock:
                if member.closed:  # expired or forgotten meanwhile: take a fresh one
                    continue
                # Heartbeat first: a reader between a join and the first beat
                # would find no beat key (redis) and prune the new member.
                try:
                    if member.kazoo is not None and not member.kazoo.connected:
                        raise coordination.ToozConnectionError("not connected to ZooKeeper")
                    member.coord.heartbeat()
                except BaseException:
                    member.suspect = True
                    raise
                now = self.clock.monotonic()
                gap, member.last_ok = now - member.last_ok, now
                if (
                    member.caps != caps
                    or member.suspect
                    # Beats come every report_interval < down_time / 2; a longer gap
                    # means the backend may have expired us: check the membership.
                    or gap >= member.down_time / 2
                    or now >= member.verify_at
                ):
                    self._ensure_joined(member, caps)
                return

    def _member(self, service: Service) -> _Member:
        key = (service.host, service.binary)
        member = self._members.get(key)
        if member is not None:
            return member
        # Connect outside the lock: one slow backend connection must not hold
        # up the beats of every other service in a daemon.
        down_time = self.times.down_time(service.binary)
        url = coordination_url(self._base_url, down_time, self.timeout)
        coord = self._coordinator(url, member_id(service.host, service.binary))
        fresh = _Member(coord, service, down_time)
        fresh.last_ok = self.clock.monotonic()
        with self._lock:
            member = self._members.setdefault(key, fresh)
        if member is not fresh:
            self._stop(coord)
        self._start_expirer()
        return member

    def _ensure_joined(self, member: _Member, caps: dict[str, Any]) -> None:
        """Create-or-update the membership; a member that was expired or removed joins again."""
        coord, group = member.coord, member.group
        if member.caps is None:
            current: Any = _ABSENT  # first beat: joining says whether we were there
        else:
            try:
                current = coord.get_member_capabilities(group, member.member_id).get(
                    timeout=self.timeout
                )
            except (coordination.MemberNotJoined, coordination.GroupNotCreated):
                current = _ABSENT
        if current is _ABSENT:
            self._join(coord, group, caps)
        elif current != caps:
            coord.update_capabilities(group, caps).get(timeout=self.timeout)
        member.caps = caps
        member.suspect = False
        member.verify_at = self.clock.monotonic() + member.down_time

    def _join(
        self, coord: coordination.CoordinationDriver, group: bytes, caps: dict[str, Any]
    ) -> None:
        for _attempt in range(2):
            try:
                coord.join_group(group, caps).get(timeout=self.timeout)
                return
            except coordination.MemberAlreadyExist:
                # Left over from an earlier coordinator with this id. On
                # zookeeper that node belongs to the old session and vanishes
                # when it expires, so take it over rather than update it.
                with contextlib.suppress(coordination.MemberNotJoined):
                    coord.leave_group(group).get(timeout=self.timeout)
            except coordination.GroupNotCreated:
                with contextlib.suppress(coordination.GroupAlreadyExist):
                    coord.create_group(group).get(timeout=self.timeout)
        coord.join_group(group, caps).get(timeout=self.timeout)

    # -- read ------------------------------------------------------------------

    def read(self, recordset: RecordSet) -> Reading:
        return self._read(recordset, {})

    def pass_reader(self) -> Callable[[RecordSet], Reading]:
        # A get_members is the whole group whatever the slice: one per
        # binary per pass (10,000 services in 1,000-row slices: 1 not 10),
        # so the sweeper can slice tooz's fleet like any other's.
        return functools.partial(self._read, groups={})

    def _read(self, recordset: RecordSet, groups: dict[str, tuple[Any, Pulse]]) -> Reading:
        """One get_members per binary not yet in `groups`, all sent before any is awaited.

        `groups` keeps each binary's members with the Pulse of when they were
        read: a member present then was last seen alive then, so a slice
        answered from an earlier read is aged by that read's time, not its own.
        """
        by_binary: dict[str, list[Service]] = defaultdict(list)
        for service in recordset.services:
            by_binary[service.binary].append(service)
        reader = self._reader_coord()
        pending = {
            binary: reader.get_members(group_id(binary))
            for binary in by_binary
            if binary not in groups
        }
        deadline = self.clock.monotonic() + self.timeout
        for binary, result in pending.items():
            try:
                members = result.get(timeout=max(0.0, deadline - self.clock.monotonic()))
            except coordination.GroupNotCreated:
                members = set()  # nobody of this binary ever joined: all NEVER
            groups[binary] = (members, Pulse(self.clock.now()))
        pulses: dict[str, Pulse] = {}
        for binary, services in by_binary.items():
            members, pulse = groups[binary]
            for s in services:
                if member_id(s.host, s.binary) in members:
                    pulses[s.uuid] = pulse
        return Reading(now=self.clock.now(), pulses=pulses)

    def _reader_coord(self) -> coordination.CoordinationDriver:
        with self._reader_lock:
            if self._reader is None:
                reader_id = f"%reader-{uuid_mod.uuid4().hex}".encode("ascii")
                coord = self._coordinator(self.reader_url, reader_id)
                self._reader = coord
            return self._reader

    # -- forget, ping, describe, close -------------------------------------------

    def forget(self, service: Service) -> None:
        with self._lock:
            member = self._members.pop((service.host, service.binary), None)
        group = group_id(service.binary)
        if member is None:
            # Beating elsewhere (or not at all): tooz only lets a member leave
            # by itself, so borrow its id for one leave_group.
            coord = self._coordinator(self.url, member_id(service.host, service.binary))
            self._leave(coord, group)
            return
        with member.lock:
            if member.closed:  # the expirer got there first; stopping it left the group
                return
            member.closed = True
            self._leave(member.coord, group)

    def _leave(self, coord: coordination.CoordinationDriver, group: bytes) -> None:
        try:
            coord.leave_group(group).get(timeout=self.timeout)
        except (coordination.MemberNotJoined, coordination.GroupNotCreated):
            pass
        finally:
            self._stop(coord)

    def ping(self) -> None:
        self._reader_coord().get_groups().get(timeout=self.timeout)

    def describe(self) -> dict[str, Any]:
        return {"backend_url": redact(self.url)}

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            members, self._members = list(self._members.values()), {}
        for member in members:
            with member.lock:
                member.closed = True
            self._stop(member.coord)
        with self._reader_lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            self._stop(reader)
        self._redis.close()
        if self._beat_pool is not None:
            self._beat_pool.shutdown(wait=False)
        if self._expirer is not None and self._expirer is not threading.current_thread():
            self._expirer.join(self.timeout)

    def _coordinator(self, url: str, member: bytes) -> coordination.CoordinationDriver:
        coord = coordination.get_coordinator(url, member)
        shared = self._redis.adopt(coord, url)
        coord.start(start_heart=False)
        if shared:
            self._redis.trim(coord)
        return coord

    def _stop(self, coord: coordination.CoordinationDriver) -> None:
        try:
            client = dependency_internals.tooz_kazoo_client(coord)
            if client is not None and not client.connected:
                # tooz's stop() leaves each group with no timeout; closed
                # first, kazoo fails those calls at once instead.
                client.stop()
            coord.stop()
        except Exception as exc:  # the backend may be gone; the connection is released anyway
            LOG.debug("stopping tooz coordinator failed: %s", exc)

    # -- expiry ----------------------------------------------------------------

    def _start_expirer(self) -> None:
        with self._lock:
            if self._expirer is not None or self._closed.is_set():
                return
            self._expirer = threading.Thread(
                target=self._expire_loop, name="tooz-expiry", daemon=True
            )
            self._expirer.start()

    def _expire_loop(self) -> None:
        tick = max(0.01, self.times.shortest / 10)
        while not self._closed.wait(tick):
            now = self.clock.monotonic()
            with self._lock:
                silent = [
                    (key, m) for key, m in self._members.items() if now - m.last_ok >= m.down_time
                ]
            for key, member in silent:
                if not member.lock.acquire(blocking=False):
                    continue  # a beat is running: not silent
                try:
                    if member.closed or self.clock.monotonic() - member.last_ok < member.down_time:
                        continue
                    member.closed = True
                    # Stopped before it leaves the cache: a beat that comes now
                    # waits, then starts a fresh coordinator, which this stop
                    # (leaving the same member id) can no longer undo.
                    self._stop(member.coord)
                    with self._lock:
                        if self._members.get(key) is member:
                            del self._members[key]
                finally:
                    member.lock.release()
