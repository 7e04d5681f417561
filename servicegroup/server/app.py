"""The HTTP daemon: a thin FastAPI layer over one ServiceGroup.

Handlers are plain `def`s because the ServiceGroup API blocks; FastAPI runs
them in its threadpool. They only translate: shapes in (schemas.py), rules
in the API (validation.py), errors out in one place (errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import uvicorn
from fastapi import FastAPI, Path, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse
from oslo_config import cfg
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from servicegroup import validation
from servicegroup.api import ServiceGroup, ServiceRef
from servicegroup.exceptions import BackendError, InvalidInput, NotFound
from servicegroup.identity_cache import IdentityCache
from servicegroup.leader.sweeper import Sweeper
from servicegroup.server import (
    auth,
    claims_api,
    errors,
    file_watch,
    fleet_summary,
    group_commit,
    metrics,
    process_tuning,
    service_paging,
    status_page,
    token_rotation,
    workers,
)
from servicegroup.server.fast_routes import FastRoutes
from servicegroup.server.group_commit import GroupCommit
from servicegroup.server.schemas import (
    NAME_DOC,
    BeatsBody,
    BeatsOut,
    BinaryTimesOut,
    EventList,
    Health,
    RegisterBody,
    ServiceList,
    ServiceOut,
    Summary,
    UpdateBody,
    VersionRange,
)
from servicegroup.server.status_json import StatusJson
from servicegroup.server.tls import CertReloader, LiveContext, ServerTls
from servicegroup.service import Registration, Service, ServiceStatus

if TYPE_CHECKING:
    from servicegroup.server.keystone_auth import KeystoneAuth

LOG = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 5

# The error codes each kind of endpoint can answer; 401/403 are reserved for auth.
_READ = (400, 401, 403, 422, 500, 503)
_BY_ID = (*_READ, 404)
_WRITE = (*_BY_ID, 409, 413)

ServiceId = Annotated[
    str,
    Path(
        description="The service's uuid; anything else is simply not found (404).",
        json_schema_extra={"format": "uuid"},
    ),
]
NameFilter = Annotated[str | None, Query(json_schema_extra=NAME_DOC)]
# ?down_time=S: judge with this threshold instead of each binary's (api.get_all).
DownTime = Annotated[
    float | None,
    Query(json_schema_extra={"exclusiveMinimum": 0, "maximum": validation.MAX_DOWN_TIME}),
]


class Bell:
    """Wakes this process's event long-polls when its own sweeper has written events.

    Without it a waiting client learns of a down event only at its next
    poll of the database, up to event_poll_interval later. Events written by
    another daemon (the leader elsewhere) or by admin actions still arrive
    by that poll.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rung: asyncio.Future[None] | None = None

    def ring(self) -> None:
        """Any thread: wake every waiter."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    async def wait(self, timeout: float) -> bool:
        """Until ring() (True) or `timeout` seconds (False), whichever comes first."""
        loop = asyncio.get_running_loop()
        if self._rung is None or self._loop is not loop:  # first wait, or a new loop (tests)
            self._loop, self._rung = loop, loop.create_future()
        done, _ = await asyncio.wait([self._rung], timeout=timeout)
        return bool(done)

    def _wake(self) -> None:
        if self._rung is not None and self._loop is not None:
            rung, self._rung = self._rung, self._loop.create_future()
            rung.set_result(None)


class ServiceCache:
    """Which services exist, so a heartbeat needs no SELECT before its write.

    Only existence matters to a beat. Entries are refreshed on register and
    PATCH and dropped on DELETE or on a NotFound beat (the db driver's UPDATE
    says so for a deleted row, so with it entries never expire: a fleet that
    beats every 10 s would otherwise re-read a sixth of its beats' records).
    Other drivers cannot tell that a record was deleted by another process,
    so entries also expire after `ttl` seconds: such a service keeps
    accepting beats for at most that long. Its bound, and the pruning of
    services a whole read no longer finds, are every identity cache's
    (identity_cache.py; create_app hands it to the group).

    An entry is only its expiry: the Service a beat is written with is the
    one the group's reads keep (ServiceGroup.known). Keeping Services here
    too held a second copy of the fleet, 60-70 MB at 100,000 services.
    """

    def __init__(self, sg: ServiceGroup, ttl: float) -> None:
        self.table: IdentityCache[float] = IdentityCache()
        self._sg = sg
        self._ttl = ttl

    def get(self, uuid: str) -> Service | None:
        expires = self.table.entries.get(uuid)
        if expires is None or expires < self._sg.clock.monotonic():
            return None
        return self._sg.known(uuid)

    def put(self, uuid: str) -> None:
        self.table.for_read()[uuid] = self._sg.clock.monotonic() + self._ttl

    def drop(self, uuid: str) -> None:
        self.table.discard(uuid)

    def refs(self, uuids: Sequence[str]) -> list[ServiceRef]:
        """Each uuid's Service, the missing ones read in one SELECT; a uuid no record has stays
        a string, for heartbeat_many to answer NotFound."""
        refs: list[ServiceRef] = []
        misses: list[str] = []
        for uuid in dict.fromkeys(uuids):
            service = self.get(uuid)
            if service is None:
                misses.append(uuid)
            refs.append(service or uuid)
        if not misses:
            return refs
        found = self._sg.records_of(misses)
        for uuid in found:
            self.put(uuid)
        return [found.get(ref, ref) if isinstance(ref, str) else ref for ref in refs]


class NameConvertor(Convertor[str]):
    """A path segment that may hold any name: '/' (sent as %2F), and newlines.

    Starlette's `path` regex is '.*', which stops at a newline, so a binary
    holding one would be 404 "no such path"; this matches everything and
    leaves the verdict to validation.name(): 400 naming the field.
    """

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("name", NameConvertor())


def _uuid(raw: str) -> str:
    """A path id that is not a uuid names no service: 404, not 400."""
    try:
        return validation.service_id(raw)
    except InvalidInput:
        raise NotFound("service", raw) from None


def _service_json(status: ServiceStatus, code: int = 200) -> JSONResponse:
    return JSONResponse(status.as_dict(), status_code=code)


def create_app(
    sg: ServiceGroup, sweeper: Sweeper | None = None, tokens: auth.Tokens | None = None
) -> FastRoutes:
    """The ASGI app over `sg` (and its sweeper, for metrics); the caller owns and closes them.

    Tokens default to those in sg's configuration ([api] *_tokens); with [api]
    auth_strategy = keystone, Keystone tokens are checked instead (keystone_auth.py).
    """
    app = FastAPI(
        title="servicegroup",
        version=_version(),
        description="Service liveness: register, heartbeat, and ask who is up.",
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    ttl = math.inf if sg.driver.refuses_deleted else sg.down_time
    cache = ServiceCache(sg, ttl=ttl)
    sg.keep_pruned(cache.table)
    bodies = StatusJson()
    sg.keep_pruned(bodies.table)
    # One registry per ?per_service= value; none given: [api] metrics_per_service.
    registries: dict[str | None, CollectorRegistry] = {
        mode: metrics.make_registry(sg, sweeper, mode) for mode in (None, *validation.PER_SERVICE)
    }
    bell = Bell()
    if sweeper is not None:
        sweeper.on_events = bell.ring
    keystone = None
    if sg.conf.api.auth_strategy == "keystone":
        keystone = _keystone_auth(sg.conf)
    guard = auth.Guard(auth.Tokens.from_conf(sg.conf) if tokens is None else tokens, keystone)

    def write_beats(uuids: list[str]) -> list[BaseException | None]:
        """One batch of the group commit: records from the cache, then one heartbeat_many."""
        failed = sg.heartbeat_many(cache.refs(uuids))
        return [failed.get(uuid) for uuid in uuids]

    # SQLite has one writer: a second batch would only wait for the lock in
    # the busy handler's sleeps (up to 100 ms each), so one writer there.
    sqlite = sg.engine.dialect.name == "sqlite"
    beat_writers = 1 if sqlite and sg.driver.name == "db" else group_commit.WRITERS
    beats: GroupCommit[str, None] = GroupCommit(write_beats, writers=beat_writers)

    def write_registrations(
        batch: list[Registration],
    ) -> list[tuple[ServiceStatus, bool] | BaseException]:
        """One batch: one register_many transaction, its statuses judged with no read back."""
        registered = sg.register_statuses(batch)
        for status, _ in registered:
            cache.put(status.service.uuid)
        return list(registered)

    # One writer on every dialect: batches of new services serialize on the
    # event log's append lock anyway, and a second writer only split them in
    # smaller batches (16 registrations against 25, PostgreSQL, wrk -c50) that
    # waited for each other: 1,166-1,546/s with one against 1,178-1,250/s
    # with two, alternated (doc/benchmarks.md).
    registrations: GroupCommit[Registration, tuple[ServiceStatus, bool]] = GroupCommit(
        write_registrations, writers=1
    )

    @app.get("/healthz", response_model=Health, responses=errors.responses(500, 503))
    def healthz() -> JSONResponse:
        """200 when the records database and the liveness backend both answer."""
        return JSONResponse(jsonable_encoder(sg.health()))

    @app.get(
        "/metrics",
        dependencies=[guard.read],
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **errors.json_responses(400, 401, 403, 500),
        },
    )
    def get_metrics(
        per_service: Annotated[
            str | None, Query(json_schema_extra={"enum": list(validation.PER_SERVICE)})
        ] = None,
    ) -> Response:
        """Prometheus metrics; ?per_service= overrides [api] metrics_per_service for this scrape.

        A Prometheus job can then scrape the fleet's counts often and every
        service's series seldom: at 100,000 services the per-service series
        are most of a scrape's cost (doc/operations.md).
        """
        body = metrics.render(registries[validation.per_service(per_service)])
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @app.post(
        "/v1/services",
        dependencies=[guard.agent],
        status_code=201,
        response_model=ServiceOut,
        responses={
            200: {"model": ServiceOut, "description": "Already registered; record updated."},
            201: {"description": "Newly registered."},
            **errors.responses(*_WRITE),
        },
    )
    async def register(body: RegisterBody) -> JSONResponse:
        """Checked here, written in the next batch of the group commit (group_commit.py).

        A plain request is answered in fast_routes.py; this is its twin and its doc.
        """
        status, created = await registrations.submit(Registration(**body.model_dump()))
        return _service_json(status, 201 if created else 200)

    @app.get(
        "/v1/services",
        dependencies=[guard.read],
        response_model=ServiceList,
        responses=errors.responses(*_READ),
    )
    def list_services(
        binary: NameFilter = None,
        host: NameFilter = None,
        topic: NameFilter = None,
        availability_zone: NameFilter = None,
        state: Annotated[
            str | None, Query(json_schema_extra={"enum": list(validation.STATES)})
        ] = None,
        sort: Annotated[
            str | None, Query(json_schema_extra={"enum": list(validation.SERVICE_SORT_KEYS)})
        ] = None,
        order: Annotated[
            str | None, Query(json_schema_extra={"enum": list(validation.SORT_ORDERS)})
        ] = None,
        offset: Annotated[
            int, Query(json_schema_extra={"minimum": 0, "maximum": validation.MAX_OFFSET})
        ] = 0,
        limit: Annotated[
            int | None,
            Query(json_schema_extra={"minimum": 1, "maximum": validation.MAX_EVENTS_PAGE}),
        ] = None,
        down_time: DownTime = None,
        summary: bool = False,
    ) -> Response:
        """Matching services; with sort, order, offset and limit, one page of them.

        `total` counts every match, so a pager knows how many pages there are.
        With down_time, every service is judged by that threshold. With
        summary=true the answer also carries GET /v1/summary's: the status
        page's refresh is then one request, and with no filter one read of
        the fleet instead of two (doc/status-page.md).
        """
        sort_by = validation.sort_key(sort)
        direction = validation.sort_order(order)
        start = validation.offset(offset)
        count = None if limit is None else validation.limit(limit)
        threshold = validation.down_time(down_time)
        cursor = sg.last_event_id() if summary else 0  # before the read, as in summary()
        statuses = sg.get_all(
            binary=binary,
            host=host,
            topic=topic,
            availability_zone=availability_zone,
            state=state,
            down_time=threshold,
        )
        shown = service_paging.page(statuses, sort_by, direction, start, count)
        # A threshold's statuses are built afresh each time (api.StatusReuse):
        # kept in the shared table, they would only push out the JSON of the
        # statuses every other read hands out again.
        renderer = bodies if threshold is None else StatusJson()
        extra = b""
        if summary:
            filters = (binary, host, topic, availability_zone, state, threshold)
            whole_fleet = all(value is None for value in filters)
            fleet = statuses if whole_fleet else sg.get_all()
            counts = fleet_summary.summary_json(fleet, sg.clock.now(), cursor)
            extra = b',"summary":' + orjson.dumps(counts)
        return Response(
            renderer.list_body(shown, len(statuses), extra), media_type="application/json"
        )

    @app.get(
        "/v1/summary",
        dependencies=[guard.read],
        response_model=Summary,
        responses=errors.responses(401, 403, 500, 503),
    )
    def summary() -> JSONResponse:
        """Counts and version ranges by binary and availability zone, from one get_all()."""
        cursor = sg.last_event_id()  # before the read: no event falls between the two
        return JSONResponse(fleet_summary.summary_json(sg.get_all(), sg.clock.now(), cursor))

    @app.get(
        "/v1/services/{id}",
        dependencies=[guard.read],
        response_model=ServiceOut,
        responses=errors.responses(*_BY_ID),
    )
    def get_service(id: ServiceId, down_time: DownTime = None) -> JSONResponse:
        """The service; with down_time, judged by that threshold instead of its binary's."""
        return _service_json(sg.get(_uuid(id), down_time=down_time))

    @app.post(
        "/v1/services/{id}/heartbeat",
        dependencies=[guard.agent],
        status_code=204,
        response_class=Response,
        responses=errors.responses(*_BY_ID),
    )
    async def heartbeat(id: ServiceId) -> Response:
        """The hot route; the daemon answers it in fast_routes.py, this is its twin and its doc."""
        await beat_off_loop(id)
        return Response(status_code=204)

    async def beat_off_loop(raw_id: str) -> None:
        """The beat, in the next batch of the group commit (group_commit.py)."""
        await beats.submit(_uuid(raw_id))

    @app.post(
        "/v1/heartbeats",
        dependencies=[guard.agent],
        response_model=BeatsOut,
        responses=errors.responses(400, 401, 403, 413, 422, 500, 503),
    )
    async def heartbeat_many(body: BeatsBody) -> JSONResponse:
        """Many heartbeats in one request: ServiceGroup.heartbeat_many over HTTP.

        For an agent that beats for a whole host: one request, and one batch
        of the group commit, rather than one of each per service. 503 when
        none was recorded because the backend failed, as heartbeat_many
        raises; a beat that failed alone is in `failed`.
        """
        uuids = validation.service_ids(body.ids)
        outcomes = await beats.submit_many(uuids)
        failed = {
            uuid: outcome
            for uuid, outcome in zip(uuids, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        }
        for error in failed.values():
            if not isinstance(error, NotFound | BackendError):
                raise error  # a bug: the usual logged 500
        down = [error for error in failed.values() if isinstance(error, BackendError)]
        if down and len(failed) == len(uuids):
            raise down[0]
        return JSONResponse(
            {"failed": {uuid: errors.error_detail(e) for uuid, e in failed.items()}}
        )

    @app.post(
        "/v1/services/{id}/leave",
        dependencies=[guard.agent],
        status_code=204,
        response_class=Response,
        responses=errors.responses(*_BY_ID),
    )
    def leave(id: ServiceId) -> Response:
        """Down at once, until the next heartbeat: a clean stop, not a silent one."""
        sg.leave(_uuid(id))
        return Response(status_code=204)

    @app.patch(
        "/v1/services/{id}",
        dependencies=[guard.admin],
        response_model=ServiceOut,
        responses=errors.responses(*_WRITE),
    )
    def update_service(id: ServiceId, body: UpdateBody) -> JSONResponse:
        uuid = _uuid(id)
        changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
        service = sg.update(uuid, **changes)
        cache.put(service.uuid)
        return _service_json(sg.get(service))

    @app.delete(
        "/v1/services/{id}",
        dependencies=[guard.admin],
        status_code=204,
        response_class=Response,
        responses=errors.responses(*_BY_ID, 409),
    )
    def delete_service(id: ServiceId) -> Response:
        uuid = _uuid(id)
        try:
            sg.delete(uuid)
        finally:
            cache.drop(uuid)
        return Response(status_code=204)

    @app.get(
        "/v1/versions/{binary:name}",
        dependencies=[guard.read],
        response_model=VersionRange,
        responses=errors.responses(*_READ),
    )
    def versions(
        binary: Annotated[str, Path(json_schema_extra=NAME_DOC)],
        up_only: bool = False,
    ) -> JSONResponse:
        """Min and max version of a binary's live services; null when there are none."""
        low, high = sg.get_version_range(binary, up_only)
        return JSONResponse({"binary": binary, "min": low, "max": high})

    @app.get(
        "/v1/binaries/{binary:name}/times",
        dependencies=[guard.read],
        response_model=BinaryTimesOut,
        responses=errors.responses(*_READ),
    )
    def binary_times(binary: Annotated[str, Path(json_schema_extra=NAME_DOC)]) -> JSONResponse:
        """How often a service of `binary` must beat and its down time; the defaults for a
        binary with no [binaries] entry, so an agent outside Python beats as join() would."""
        return JSONResponse(sg.times_of(binary).as_dict())

    @app.get(
        "/v1/events",
        response_model=EventList,
        responses=errors.responses(*_READ),
        dependencies=[guard.read],
    )
    async def list_events(
        since: Annotated[
            int | None,
            Query(json_schema_extra={"minimum": 0, "maximum": validation.MAX_CURSOR}),
        ] = None,
        binary: NameFilter = None,
        host: NameFilter = None,
        wait: Annotated[float, Query(json_schema_extra={"minimum": 0, "maximum": 60})] = 0.0,
        limit: Annotated[int, Query(json_schema_extra={"minimum": 1, "maximum": 1000})] = 1000,
    ) -> JSONResponse:
        """Events after `since`, oldest first; long-polls up to `wait` s when there are none.

        Async on purpose: a waiting client holds no worker thread, only a
        short DB read in the threadpool every poll interval.
        """
        cursor = validation.cursor(since)
        seconds = validation.wait(wait)
        validation.name("binary", binary, required=False)
        validation.name("host", host, required=False)
        validation.limit(limit)
        deadline = time.monotonic() + seconds
        while True:
            batch = await run_in_threadpool(sg.read_events, cursor, binary, host, limit)
            remaining = deadline - time.monotonic()
            if batch.events or remaining <= 0:
                rows = [e.as_dict() for e in batch.events]
                return JSONResponse({"events": rows, "cursor": batch.cursor})
            await bell.wait(min(sg.event_poll_interval, remaining))

    app.include_router(claims_api.make_router(sg, guard))
    app.include_router(status_page.make_router(sg.conf.api.auth_strategy))
    return FastRoutes(app, beat_off_loop, registrations.submit, guard)


def _keystone_auth(conf: cfg.ConfigOpts) -> KeystoneAuth:
    """keystone_auth.py, imported only under auth_strategy = keystone.

    Importing it (keystoneauth1, oslo.policy) took 0.29 s of every daemon's
    start, measured with -X importtime, for a strategy most daemons never use.
    """
    from servicegroup.server.keystone_auth import KeystoneAuth

    return KeystoneAuth.from_conf(conf)


def serve(conf: cfg.ConfigOpts, insecure: bool = False) -> int:
    """Run the daemon until SIGTERM or SIGINT; 0 after a clean stop. SIGHUP reads the token
    and TLS files again (token_rotation.py, tls.py, file_watch.py).

    Raises SchemaOutOfDate, ConfigError or BackendError before listening, so
    the caller reports why it refused to start; uvicorn's own startup failures
    (port in use) are already logged by uvicorn and come back as 1. Beyond
    loopback, an open API (no agent or admin token) or tokens without TLS
    need `insecure`. With `[api] workers` > 1, that many daemon processes
    share the port (workers.py), each serving TLS itself on its socket.
    """
    with file_watch.sighup_ignored():  # SIGHUP reloads files; it never stops the daemon
        tokens = auth.Tokens.from_conf(conf)
        tls = ServerTls.from_conf(conf)
        auth.check_exposure(
            conf.api.host,
            conf.api.port,
            tokens,
            tls=tls.enabled,
            insecure=insecure,
            keystone=conf.api.auth_strategy == "keystone",
        )
        if conf.api.auth_strategy == "keystone":
            # A configuration mistake refused now, before the sweeper leads or a worker
            # forks; each process then builds its own (create_app), with its own session.
            _keystone_auth(conf)
        # A daemon beats for services that may reach any daemon: znodes that
        # outlive this one's session (drivers/zookeeper.py, "Two kinds of node").
        conf.set_default("node_lifetime", "heartbeat", group="zookeeper")
        if conf.api.workers > 1:
            return workers.supervise(
                conf.api.workers,
                conf.api.host,
                conf.api.port,
                lambda sock: _serve_process(conf, tokens, tls, sock),
            )
        return _serve_process(conf, tokens, tls, None)


def _serve_process(
    conf: cfg.ConfigOpts, tokens: auth.Tokens, tls: ServerTls, sock: socket.socket | None
) -> int:
    """One daemon process: its own ServiceGroup, sweeper and HTTP server (on `sock` if given)."""
    process_tuning.bound_malloc()  # before any thread: the driver's, the sweeper, the pools
    sg = ServiceGroup(conf)
    sweeper = Sweeper(sg, conf)
    try:
        sweeper.start()
        app = create_app(sg, sweeper, tokens)
        live = LiveContext()
        config = uvicorn.Config(
            app,
            host=conf.api.host,
            port=conf.api.port,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            **tls.uvicorn_options(live),
        )
        config.load()  # what server.run() would do first; now, so that live.context is set
        sources: list[file_watch.Reloadable] = [token_rotation.TokenReloader(conf, app.guard)]
        if live.context is not None:
            sources.append(CertReloader(tls, live))
        watcher = file_watch.FileWatcher(sources)
        server = uvicorn.Server(config)
        process_tuning.tune_gc()
        LOG.info(
            "servicegroup starting on %s://%s:%s (driver %s, pid %d)",
            "https" if tls.enabled else "http",
            conf.api.host,
            conf.api.port,
            sg.driver.name,
            os.getpid(),
        )
        with (
            _stop_signals_end_cleanly(server),
            watcher.on_sighup(),
            watcher.running(conf.api.token_file_poll_interval),
            process_tuning.giving_back_memory(),
        ):
            server.run(sockets=None if sock is None else [sock])
    except SystemExit as exc:
        # uvicorn exits 3 on startup failures; to an operator a refusal is a refusal.
        return 1 if exc.code else 0
    finally:
        sweeper.stop()
        sg.close()
    LOG.info("servicegroup stopped")
    return 0


@contextlib.contextmanager
def _stop_signals_end_cleanly(server: uvicorn.Server) -> Iterator[None]:
    """Make a graceful stop exit 0.

    After shutting down, uvicorn re-raises the signal that stopped it so the
    previous handler runs: default SIGTERM would kill us (exit 143) and SIGINT
    would raise KeyboardInterrupt. Our handler just asks the server to stop,
    which also covers a signal that lands before uvicorn installs its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_sig: int, _frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _version() -> str:
    try:
        return metadata.version("servicegroup")
    except metadata.PackageNotFoundError:
        return "0+unknown"
