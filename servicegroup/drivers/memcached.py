"""The `memcached` driver: one expiring key per service on one or more servers.

memcached has no clock a client can read, so the heartbeat carries the
writer's time (its Clock) in the value and the reader judges ages against its
own Clock. Skew between a writer and a reader host therefore enters the age:
a writer whose clock runs s seconds ahead stays up s seconds longer than it
should, but never longer than the key's TTL (ceil(down time) + 1 s), which
memcached enforces on its own clock; a writer s seconds behind looks s seconds
older and flaps down once s exceeds down time - report interval. Keep hosts
in NTP sync, as nova's memcache driver already required.

Keys are `<key_prefix><service uuid>`: the uuid is stable across restarts,
unique, and 36 ASCII characters whatever the host or binary name holds, so
every key is a valid memcached key without escaping or hashing (the prefix is
checked once at start-up). Values are `<epoch microseconds>|<version>`; later
formats append fields and never reorder them.

With several servers, keys are placed by pymemcache's RendezvousHash exactly
as HashClient places them (node "host:port", key without prefix), but the
driver talks to each server's client itself instead of going through
HashClient: HashClient answers "nothing there" for a server it has marked
failed or dead (even with ignore_exc=False, during retry_timeout) and re-hashes
a dead server's keys onto the others. Either would turn an unreachable cache
server into services that look down. Here the node list never changes, so a
service always lives on the same server, and a server that cannot be asked
makes exactly its services unknown.

A restarted server answers, but with every key gone: read naively, the whole
fleet on it is down until each service's next beat (nova's driver and tooz
both do this, and a fleet-wide "down" starts evacuations). So every read also
asks for a sentinel key, ``<key_prefix>sentinel``, written once per server
with no expiry. A server that held the sentinel at this driver's last read
and now answers without it has lost its keys: for one down time from that
moment, a key missing on that server is reported as the last pulse this
driver saw for it, or UNKNOWN if it saw none. A service that keeps beating
rewrites its key within one report interval; one that died meanwhile ages
from its last real beat and is down once the down time has passed, exactly
as if nothing had happened. The API still judges; the driver only refuses to
turn "the cache forgot" into "never beat". A reader that starts after the
restart cannot tell and reads missing keys as usual.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from oslo_config import cfg
from pymemcache.client.base import Client, normalize_server_spec
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError
from sqlalchemy import Engine

from servicegroup.binary_times import BinaryTimes
from servicegroup.clock import Clock
from servicegroup.db.records import RecordSet
from servicegroup.drivers.base import UNKNOWN, Driver, Pulse, Reading, new_pulse
from servicegroup.exceptions import ConfigError
from servicegroup.identity_cache import IdentityCache
from servicegroup.service import Service

LOG = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
MAX_KEY = 250
UUID_LEN = 36
# memcached reads an expiry above 30 days as an absolute Unix time.
MAX_RELATIVE_TTL = 30 * 24 * 3600
# A pooled connection the server closed (restart, idle timeout) fails on its
# next use with one of these; the request never reached a live server, so it
# is sent once more on a fresh connection. Refused connections and timeouts
# are not retried, which keeps every call bounded by the configured timeouts.
STALE_CONNECTION = (MemcacheUnexpectedCloseError, ConnectionResetError, BrokenPipeError)
# Unprefixed; not a uuid, so it can never be a service's key.
SENTINEL = "sentinel"


def _check_prefix(prefix: str) -> bytes:
    """The prefix as key bytes, or ConfigError: a bad prefix would fail every beat."""
    if not all(0x21 <= ord(ch) < 0x7F for ch in prefix):
        raise ConfigError(
            f"memcached.key_prefix: {prefix!r} must be printable ASCII without spaces"
        )
    if len(prefix) + UUID_LEN > MAX_KEY:
        raise ConfigError(
            f"memcached.key_prefix: at most {MAX_KEY - UUID_LEN} characters, "
            f"so that prefix + uuid fits memcached's {MAX_KEY}-byte keys"
        )
    return prefix.encode("ascii")


def _ttl(conf: cfg.ConfigOpts) -> int:
    """Whole seconds, at least the effective down time (>= service_down_time).

    max(service_down_time, 2.5 x report_interval) bounds the API's corrected
    down time from above without repeating its rule. The TTL is only the
    server-side hard bound; ages are judged from the stored time.
    """
    ttl = math.ceil(bound_down_time(conf)) + 1
    return 0 if ttl > MAX_RELATIVE_TTL else ttl


def bound_down_time(conf: cfg.ConfigOpts) -> float:
    """An upper bound of the API's effective down times, without repeating its rule.

    The longest of any binary's ([binaries]): a beat must outlive the
    longest down time that can still count it.
    """
    down_time: float = conf.service_down_time
    interval: float = conf.report_interval
    return max(down_time, 2.5 * interval, BinaryTimes.from_conf(conf).longest)


def _parse(value: bytes | None) -> Pulse | None:
    """A stored heartbeat as a Pulse; None for no key; UNKNOWN for a value we cannot read."""
    if value is None:
        return None
    try:
        micros = int(value.split(b"|", 1)[0])
        return new_pulse(EPOCH + micros * ONE_US)
    except (ValueError, OverflowError):
        return UNKNOWN


class MemcachedDriver(Driver):
    name = "memcached"
    backend = "memcached"
    backend_errors = (MemcacheError, OSError)

    def __init__(self, conf: cfg.ConfigOpts, engine: Engine, clock: Clock) -> None:
        super().__init__(conf, engine, clock)
        group = conf.memcached
        if not group.servers:
            raise ConfigError("memcached.servers: at least one host:port is needed")
        self.ttl = _ttl(conf)
        prefix = _check_prefix(group.key_prefix)
        self.addresses: list[str] = []
        self.servers: list[_Server] = []
        for server in group.servers:
            spec = normalize_server_spec(server)
            # HashClient's node name, so keys land where HashClient would put them.
            self.addresses.append(f"{spec[0]}:{spec[1]}" if isinstance(spec, tuple) else spec)
            self.servers.append(
                _Server(
                    spec,
                    # pymemcache's default for both is None: wait forever.
                    connect_timeout=group.connect_timeout,
                    timeout=group.socket_timeout,
                    no_delay=True,
                    key_prefix=prefix,
                    default_noreply=False,
                )
            )
        self._hasher = RendezvousHash(list(self.addresses))
        self._index = {address: i for i, address in enumerate(self.addresses)}
        # uuid -> server index; placement never changes, and RendezvousHash is
        # pure-Python murmur3 per server, too slow to redo for 10,000 keys a read.
        self._placement: IdentityCache[int] = self.identity_cache()
        # Restart detection (module docstring): per server, whether the
        # sentinel was there at the last read, and until when (monotonic) its
        # missing keys are held; per service, the last pulse read.
        self._hold_for = bound_down_time(conf)
        self._sentinel_seen = [False] * len(self.servers)
        self._hold_until = [0.0] * len(self.servers)
        # uuid -> (stored value, its Pulse): see read().
        self._last: IdentityCache[tuple[bytes | None, Pulse]] = self.identity_cache()

    # -- placement -------------------------------------------------------------

    def _server_of(self, uuid: str) -> int:
        if len(self.servers) == 1:
            return 0
        placement = self._placement.for_read()
        index = placement.get(uuid)
        if index is None:
            index = placement[uuid] = self._index[self._hasher.get_node(uuid)]
        return index

    def _call(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        func = getattr(self.servers[index].client(), method)
        try:
            return func(*args, **kwargs)
        except STALE_CONNECTION:
            # The client closed its socket on the error; this reconnects.
            return func(*args, **kwargs)

    # -- Driver ----------------------------------------------------------------

    def beat(self, service: Service) -> None:
        micros = (self.clock.now() - EPOCH) // ONE_US
        value = b"%d|%d" % (micros, service.version)
        index = self._server_of(service.uuid)
        if not self._call(index, "set", service.uuid, value, expire=self.ttl, noreply=False):
            raise MemcacheError(f"{self.addresses[index]} did not store the heartbeat")

    def beat_many(self, services: Sequence[Service]) -> dict[str, BaseException]:
        """One set_many per server: every value in one send, the answers in one read."""
        micros = (self.clock.now() - EPOCH) // ONE_US
        by_server: dict[int, dict[str, bytes]] = {}
        for service in services:
            values = by_server.setdefault(self._server_of(service.uuid), {})
            values[service.uuid] = b"%d|%d" % (micros, service.version)
        failed: dict[str, BaseException] = {}
        failures: list[tuple[int, BaseException]] = []
        for index, values in by_server.items():
            try:
                refused = self._call(index, "set_many", values, expire=self.ttl, noreply=False)
            except self.backend_errors as exc:
                failures.append((index, exc))
                failed.update(dict.fromkeys(values, exc))
                continue
            for uuid in refused:
                failed[uuid] = MemcacheError(f"{self.addresses[index]} did not store the heartbeat")
        if failures and len(failures) == len(by_server):
            raise self._none_answered(failures)
        return failed

    def read(self, recordset: RecordSet) -> Reading:
        # "Now" is taken before asking: a server that takes its full timeout
        # to fail must not age the services of the servers that answered.
        now = self.clock.now()
        if len(self.servers) == 1:
            batches = {0: [svc.uuid for svc in recordset.services]}
        else:
            batches = {}
            for svc in recordset.services:
                batches.setdefault(self._server_of(svc.uuid), []).append(svc.uuid)
        pulses: dict[str, Pulse] = {}
        failures: list[tuple[int, BaseException]] = []
        last = self._last.for_read()
        # One get_many per server. Sequential: with one dead server a read
        # costs that server's timeout once, bounded by the configured timeouts.
        for index, uuids in batches.items():
            try:
                values = self._call(index, "get_many", [*uuids, SENTINEL])
                held = self._held(index, SENTINEL in values)
            except self.backend_errors as exc:
                failures.append((index, exc))
                pulses.update(dict.fromkeys(uuids, UNKNOWN))
                continue
            for uuid in uuids:
                value = values.get(uuid)
                entry = last.get(uuid)
                if value is not None and entry is not None and entry[0] == value:
                    # Unchanged since the last read (most keys between two
                    # reads): its Pulse again, without parsing the value.
                    pulses[uuid] = entry[1]
                    continue
                pulse = _parse(value)
                if pulse is None and held:
                    # The server forgot the key: the last Pulse, kept as the
                    # value it came from, so a new beat still reads as new.
                    pulse = entry[1] if entry is not None else UNKNOWN
                    value = entry[0] if entry is not None else None
                if pulse is None:
                    last.pop(uuid, None)  # gone for real (leave, expiry)
                    continue
                pulses[uuid] = pulse
                if pulse.known:
                    last[uuid] = (value, pulse)
        if failures and len(failures) == len(batches):
            raise self._none_answered(failures)
        return Reading(now=now, pulses=pulses)

    def _held(self, index: int, sentinel_found: bool) -> bool:
        """Whether server `index` lost its keys less than a down time ago (see module doc)."""
        clock = self.clock.monotonic()
        if not sentinel_found:
            if self._sentinel_seen[index]:
                self._hold_until[index] = clock + self._hold_for
                LOG.warning(
                    "memcached %s lost its keys (restarted?); holding its services' last "
                    "known state for %gs",
                    self.addresses[index],
                    self._hold_for,
                )
            self._sentinel_seen[index] = False
            # add: never overwrite; no expiry, so only a restart (or eviction) removes it.
            self._call(index, "add", SENTINEL, b"1", expire=0, noreply=False)
        else:
            self._sentinel_seen[index] = True
        return clock < self._hold_until[index]

    def forget(self, service: Service) -> None:
        self._call(self._server_of(service.uuid), "delete", service.uuid, noreply=False)

    def ping(self) -> None:
        failures = []
        for index in range(len(self.servers)):
            try:
                self._call(index, "version")
            except self.backend_errors as exc:
                failures.append((index, exc))
        if len(failures) == len(self.servers):
            raise self._none_answered(failures)

    def describe(self) -> dict[str, Any]:
        servers = []
        for index, address in enumerate(self.addresses):
            try:
                version = self._call(index, "version")
            except self.backend_errors as exc:
                servers.append({"address": address, "answers": False, "error": _text(exc)})
            else:
                version = (
                    version.decode(errors="replace") if isinstance(version, bytes) else version
                )
                servers.append({"address": address, "answers": True, "version": version})
        return {"servers": servers, "ttl": self.ttl}

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def _none_answered(self, failures: list[tuple[int, BaseException]]) -> MemcacheError:
        detail = "; ".join(f"{self.addresses[i]}: {_text(exc)}" for i, exc in failures)
        error = MemcacheError(f"no memcached server answered ({detail})")
        error.__cause__ = failures[0][1]
        return error


class _Server:
    """One memcached server, reached through a plain pymemcache Client per thread.

    A Client is not thread-safe and a ServiceGroup is shared by reporter and
    API threads. PooledClient would do, but its checkout costs a lock and a
    context manager on every beat; a per-thread Client keeps a beat at the
    cost of the raw Client.set, and never makes one thread wait on another's
    slow read.
    """

    def __init__(self, spec: Any, **client_args: Any) -> None:
        self.spec = spec
        self.client_args = client_args
        self._local = threading.local()
        # Clients die with their thread; close() closes the ones still alive.
        self._clients: weakref.WeakSet[Client] = weakref.WeakSet()
        self._lock = threading.Lock()

    def client(self) -> Client:
        try:
            return self._local.client
        except AttributeError:
            client = Client(self.spec, **self.client_args)
            self._local.client = client
            with self._lock:
                self._clients.add(client)
            return client

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
