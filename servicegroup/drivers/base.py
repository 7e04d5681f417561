"""What every liveness driver is: I/O only.

A driver answers two questions for a set of services: when did each last
heartbeat, and could it tell at all. What "up" means is decided once, in
api.py, for every driver alike; so a new backend is only I/O, and one
conformance suite proves them all.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from oslo_config import cfg
from sqlalchemy import Engine

from servicegroup.clock import Clock
from servicegroup.db.records import RecordSet
from servicegroup.exceptions import NotFound
from servicegroup.identity_cache import IdentityCache
from servicegroup.service import Service, fast_new


@dataclass(frozen=True, slots=True)
class Pulse:
    # When the backend last saw a heartbeat, in the backend's clock.
    last_heartbeat: datetime | None
    # False: the backend could not say (server unreachable), so the state is
    # unknown rather than down.
    known: bool = True


# Pulse(last_heartbeat) without the frozen __init__'s cost, for reads of 10,000.
new_pulse = fast_new(Pulse)
UNKNOWN = Pulse(None, known=False)
NEVER = Pulse(None)


@dataclass(frozen=True, slots=True)
class Reading:
    # "Now" on the same clock as the pulses' last_heartbeat; ages are
    # now - last_heartbeat, so no host's clock enters the judgement.
    now: datetime | None
    pulses: Mapping[str, Pulse]


class Driver(abc.ABC):
    """Base of every liveness driver.

    `backend_errors` lists the exceptions that mean "the backend failed";
    the API turns them into BackendError in one place, so drivers do not
    catch and re-raise on every call.
    """

    name: ClassVar[str]
    backend: ClassVar[str]
    backend_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    # Whether a Pulse's last_heartbeat is when the service last beat, so its
    # expiry is known in advance (leader/schedule.py); False when it is only
    # when the backend was read (tooz: present or not).
    beat_times: ClassVar[bool] = True
    # Whether beat() and beat_many() fail with NotFound for a deleted record
    # (db: its UPDATE matches no live row). Others write a backend key that
    # knows nothing of SQL, so the daemon's ServiceCache must expire entries.
    refuses_deleted: ClassVar[bool] = False

    def __init__(self, conf: cfg.ConfigOpts, engine: Engine, clock: Clock) -> None:
        self.conf = conf
        self.engine = engine
        self.clock = clock
        self.identity_caches: list[IdentityCache[Any]] = []

    def identity_cache(self) -> IdentityCache[Any]:
        """A table by service uuid that keep_only() prunes: see identity_cache.py."""
        cache: IdentityCache[Any] = IdentityCache()
        self.identity_caches.append(cache)
        return cache

    def keep_only(self, live: Collection[str]) -> None:
        """Forget every service not in `live`, the uuids a read of every live service found."""
        for cache in self.identity_caches:
            cache.keep_only(live)

    @abc.abstractmethod
    def beat(self, service: Service) -> None:
        """Record one heartbeat; create whatever the backend needs on first use."""

    def beat_many(self, services: Sequence[Service]) -> dict[str, BaseException]:
        """Record many heartbeats in as few round trips as the backend allows.

        Group commit (the daemon's, server/group_commit.py; an agent beating
        for a whole host) depends on it being one write, or one per server,
        not one per service. Raises when the whole batch failed, so every
        beat in it failed alike. Returns the beats that failed on their own,
        by uuid: NotFound for a deleted service, a backend error for a
        server that held only some of them; a failed beat never spoils its
        batch mates. This fallback, for a backend with no batch form, is
        one beat() after another.
        """
        failed: dict[str, BaseException] = {}
        own_errors: tuple[type[BaseException], ...] = (NotFound, *self.backend_errors)
        for service in services:
            try:
                self.beat(service)
            except own_errors as exc:
                failed[service.uuid] = exc
        return failed

    @abc.abstractmethod
    def read(self, records: RecordSet) -> Reading:
        """Pulses for every record, in one round trip (or one per server), never one each."""

    def pass_reader(self) -> Callable[[RecordSet], Reading]:
        """read() for the slices of one pass over the whole fleet (api.slices).

        A driver whose read costs a whole group's read whatever records it
        is given (tooz: get_members) answers every slice of a pass from one
        group read, rather than paying it once per slice or making the pass
        one slice; for every other driver a slice's read is just read().
        """
        return self.read

    @abc.abstractmethod
    def forget(self, service: Service) -> None:
        """Make the service down now (leave); its SQL record stays."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Prove the backend answers; raise one of backend_errors if not."""

    def describe(self) -> dict[str, Any]:
        """What /healthz shows about this backend, beyond up or down."""
        return {}

    def close(self) -> None:  # noqa: B027 - most drivers hold nothing to close
        """Release connections and sessions."""
