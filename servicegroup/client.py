"""The servicegroup HTTP API from Python, in the ServiceGroup API's own terms.

Client has ServiceGroup's methods (api.py), with the same arguments, the
same return types (Service, ServiceStatus, Claim, EventBatch...: from_json.py
reads them back) and the same exceptions, rebuilt from the daemon's error
body: InvalidInput (400/413/422), NotFound (404), ClaimHeld and ClaimLost
(409), BackendError (5xx, or the daemon cannot be reached). So code moves
between in-process and HTTP by changing one constructor:

    sg = ServiceGroup.from_options("servicegroup.conf")   # or:
    sg = Client("http://servicegroup:8797", token)

HTTP adds Unauthorized (401) and Forbidden (403). What only a process that
holds the backends can do (register_many's one transaction, the sweeper's
reads) is not here; see doc/api.md, "The Python HTTP client".
"""

from __future__ import annotations

import os
import threading
import urllib.parse
import uuid as uuid_mod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from servicegroup import conf as sg_conf
from servicegroup import pem, validation
from servicegroup.binary_times import Times
from servicegroup.claims import as_token
from servicegroup.db.claim_rows import LIVE, Claim, lost
from servicegroup.db.event_log import MAX_PAGE, Event, EventBatch
from servicegroup.exceptions import (
    BackendError,
    ClaimHeld,
    ClaimLost,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceGroupError,
    Unauthorized,
)
from servicegroup.from_json import (
    claim_from_json,
    event_batch_from_json,
    service_from_json,
    status_from_json,
    times_from_json,
)
from servicegroup.reporter import Reporter
from servicegroup.service import Service, ServiceStatus, State
from servicegroup.watcher import Watcher

if TYPE_CHECKING:
    from keystoneauth1.plugin import BaseAuthPlugin
    from keystoneauth1.session import Session as KeystoneSession

    KeystoneCredentials = KeystoneSession | BaseAuthPlugin

TOKEN_ENV = "SERVICEGROUP_TOKEN"
# The daemon's [api] auth_strategy values (conf.AUTH_STRATEGY), each its own header.
AUTH_STRATEGIES = tuple(name for name, _help in sg_conf.AUTH_STRATEGY)
DEFAULT_TIMEOUT = 10.0
DAEMON = "servicegroup daemon"
# [DEFAULT] report_interval's default, for join(): a client cannot read the daemon's.
REPORT_INTERVAL: float = next(
    opt.default for opt in sg_conf.default_opts if opt.name == "report_interval"
)
# heartbeat_many's ids per POST /v1/heartbeats: well within the daemon's
# 64 KiB body limit (some 1,600 ids), and within one of its write batches.
BEATS_PER_REQUEST = 1000
# How long each of a watcher's long-polls waits: an event arrives as soon as
# it is written; stop() returns within this.
WATCH_WAIT = 2.0
# Pause before a watcher's next poll after one that found nothing or failed.
WATCH_PAUSE = 0.2

ServiceRef = Service | str
# renew()'s "details not given", as distinct from details=None (clear them).
_UNSET: Any = object()


class Client:
    """One keep-alive connection pool to one daemon; safe to share between threads.

    The token comes from `token`, else from $SERVICEGROUP_TOKEN (so it need
    not be on a command line); with neither, none is sent. It is sent as the
    daemon's `[api] auth_strategy` expects it: `token` (the default), as
    `Authorization: Bearer`; `keystone`, as a Keystone token in X-Auth-Token.
    A Keystone token expires, so a long-lived client passes the credentials
    instead: `keystone_session`, a keystoneauth1 Session or auth plugin
    (keystone_session.py builds one from --os-* options). Each request then
    takes the session's current token, which keystoneauth renews before it
    expires, and a request refused with 401 (a token revoked early) is sent
    once more with a new token. It implies auth_strategy="keystone" and
    replaces `token` and $SERVICEGROUP_TOKEN.
    An https:// daemon's certificate must be signed by a CA in `ca_file`
    (PEM), else in the default bundle; `client_cert` and `client_key` (or a
    cert file holding both) answer a daemon that asks for one: mutual TLS.
    Unreadable files raise ConfigError here (pem.py).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        auth_strategy: str | None = None,
        transport: httpx.BaseTransport | None = None,
        keystone_session: KeystoneCredentials | None = None,
    ) -> None:
        auth: httpx.Auth | None = None
        if keystone_session is None:
            token = token or os.environ.get(TOKEN_ENV) or None
            headers = _auth_headers(auth_strategy or "token", token)
        else:
            if token:
                raise InvalidInput("token", "give either a token or keystone_session, not both")
            if auth_strategy not in (None, "keystone"):
                raise InvalidInput("auth_strategy", "must be keystone with keystone_session")
            # Only clients of a keystone daemon pay for importing keystoneauth1.
            from servicegroup.keystone_session import KeystoneSessionAuth

            headers, auth = {}, KeystoneSessionAuth(keystone_session)
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            timeout=timeout,
            verify=pem.client_context(ca_file, client_cert, client_key),
            transport=transport,
        )
        # This client's identity for claims, as ServiceGroup.incarnation is a process's.
        self.incarnation = str(uuid_mod.uuid4())
        self._reporters: dict[str, Reporter] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the reporters join() started, then close the connections."""
        with self._lock:
            reporters, self._reporters = list(self._reporters.values()), {}
        for reporter in reporters:
            reporter.stop()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records -----------------------------------------------------------------

    def register(
        self,
        host: str,
        binary: str,
        topic: str | None = None,
        availability_zone: str | None = None,
        version: int = 0,
    ) -> Service:
        service, _created = self.register_ex(host, binary, topic, availability_zone, version)
        return service

    def register_ex(
        self,
        host: str,
        binary: str,
        topic: str | None = None,
        availability_zone: str | None = None,
        version: int = 0,
    ) -> tuple[Service, bool]:
        """register(), also saying whether the record is new (the daemon answered 201)."""
        body = {
            "host": host,
            "binary": binary,
            "topic": topic,
            "availability_zone": availability_zone,
            "version": version,
        }
        response = self._call("POST", "/v1/services", json=body)
        return service_from_json(response.json()), response.status_code == 201

    def update(self, service: ServiceRef, **changes: Any) -> Service:
        """disabled, disabled_reason, forced_down, version (admin token); all or nothing."""
        return status_from_json(self._json("PATCH", _service_path(service), json=changes)).service

    def set_disabled(
        self, service: ServiceRef, disabled: bool, reason: str | None = None
    ) -> Service:
        return self.update(service, disabled=disabled, disabled_reason=reason)

    def set_forced_down(self, service: ServiceRef, forced: bool) -> Service:
        return self.update(service, forced_down=forced)

    def set_version(self, service: ServiceRef, version: int) -> Service:
        return self.update(service, version=version)

    def delete(self, service: ServiceRef) -> None:
        """Soft-delete the record (admin token); its name is free to register again."""
        self._call("DELETE", _service_path(service))

    # -- liveness ----------------------------------------------------------------

    def heartbeat(self, service: ServiceRef) -> None:
        self._call("POST", _service_path(service, "/heartbeat"))

    def heartbeat_many(self, services: Iterable[ServiceRef]) -> dict[str, BaseException]:
        """ServiceGroup.heartbeat_many() over HTTP: the failed beats by uuid, NotFound or
        BackendError; BackendError raised when none was recorded because the backend failed.

        POST /v1/heartbeats, BEATS_PER_REQUEST services a request: the
        daemon writes each request's beats as one batch. Every id is checked
        before any beat is sent (InvalidInput naming "id", as in-process).
        """
        uuids = list(dict.fromkeys(_uuid(ref) for ref in services))
        size = BEATS_PER_REQUEST
        failed: dict[str, BaseException] = {}
        for start in range(0, len(uuids), size):
            chunk = uuids[start : start + size]
            try:
                body = self._json("POST", "/v1/heartbeats", json={"ids": chunk})
            except BackendError as exc:  # that whole request failed: so did each beat
                failed.update(dict.fromkeys(chunk, exc))
                continue
            for uuid, detail in body["failed"].items():
                failed[uuid] = error_from_detail(detail["code"], detail)
        down = [error for error in failed.values() if isinstance(error, BackendError)]
        if down and len(failed) == len(uuids):
            raise down[0]
        return failed

    def join(self, service: Service, report_interval: float | None = None) -> Reporter:
        """Start a background reporter: a beat now, then one every `report_interval` s.

        None (the default) beats at the binary's own interval, as
        ServiceGroup.join does: the daemon's [binaries] entry, or its
        [DEFAULT] (one request, `times_of`). Beating at a fixed default
        instead would take down a binary whose down time is shorter than
        twice that default. A daemon older than that endpoint: [DEFAULT]
        report_interval's default.
        """
        if report_interval is None:
            try:
                report_interval = self.times_of(service.binary).report_interval
            except NotFound:  # a daemon older than GET /v1/binaries/{binary}/times
                report_interval = REPORT_INTERVAL
        if isinstance(report_interval, bool) or not isinstance(report_interval, int | float):
            raise InvalidInput("report_interval", "must be a number of seconds")
        if not report_interval > 0:
            raise InvalidInput("report_interval", "must be more than 0 seconds")
        backend = f"the {DAEMON} at {self.base_url}"
        reporter = Reporter(service, self.heartbeat, report_interval, backend)
        with self._lock:
            old = self._reporters.pop(service.uuid, None)
            self._reporters[service.uuid] = reporter
        if old is not None:
            old.stop()
        return reporter.start()

    def leave(self, service: ServiceRef) -> None:
        """Stop reporting and make the service down at once, until its next heartbeat."""
        uuid = _uuid(service)
        with self._lock:
            reporter = self._reporters.pop(uuid, None)
        if reporter is not None:
            reporter.stop()
        self._call("POST", f"/v1/services/{uuid}/leave")

    def times_of(self, binary: str) -> Times:
        """The daemon's report_interval and service_down_time for `binary` ([binaries], else
        the defaults). NotFound(kind "path") from a daemon older than the endpoint."""
        path = f"/v1/binaries/{_quote(validation.name('binary', binary))}/times"
        return times_from_json(self._json("GET", path))

    def is_up(self, service: ServiceRef, down_time: float | None = None) -> bool:
        """False for a service that does not exist, as in-process."""
        try:
            return self.get(service, down_time=down_time).is_up
        except NotFound:
            return False

    def get(self, service: ServiceRef, down_time: float | None = None) -> ServiceStatus:
        """The service; `down_time` judges it by that threshold instead of its binary's."""
        params = {} if down_time is None else {"down_time": down_time}
        return status_from_json(self._json("GET", _service_path(service), params=params))

    def get_all(
        self,
        binary: str | None = None,
        host: str | None = None,
        topic: str | None = None,
        availability_zone: str | None = None,
        state: State | str | None = None,
        down_time: float | None = None,
    ) -> list[ServiceStatus]:
        """Every matching service with its state; None means no filter.

        `down_time` judges every service by that threshold instead of its binary's.
        """
        filters = {
            "binary": binary,
            "host": host,
            "topic": topic,
            "availability_zone": availability_zone,
            "state": None if state is None else str(state),
            "down_time": down_time,
        }
        params = {key: value for key, value in filters.items() if value is not None}
        body = self._json("GET", "/v1/services", params=params)
        return [status_from_json(row) for row in body["services"]]

    def get_min_version(self, binary: str, up_only: bool = False) -> int | None:
        return self.get_version_range(binary, up_only)[0]

    def get_max_version(self, binary: str, up_only: bool = False) -> int | None:
        return self.get_version_range(binary, up_only)[1]

    def get_version_range(
        self, binary: str, up_only: bool = False
    ) -> tuple[int | None, int | None]:
        params = {"up_only": "true" if validation.flag("up_only", up_only) else "false"}
        path = f"/v1/versions/{_quote(validation.name('binary', binary))}"
        body = self._json("GET", path, params=params)
        return body["min"], body["max"]

    def health(self) -> dict[str, Any]:
        """The daemon's view: its driver and backend; BackendError when one does not answer."""
        return self._json("GET", "/healthz")

    # -- events ------------------------------------------------------------------

    def events(
        self,
        since: int | None = None,
        binary: str | None = None,
        host: str | None = None,
        wait: float = 0.0,
        limit: int = MAX_PAGE,
    ) -> EventBatch:
        """Events after `since`, oldest first; a long-poll of up to `wait` s when there are none.

        The request's read timeout is this client's plus `wait`, so a long
        wait is not taken for a dead daemon.
        """
        seconds = validation.wait(wait)
        params: dict[str, Any] = {"since": since, "binary": binary, "host": host, "limit": limit}
        params = {key: value for key, value in params.items() if value is not None}
        params["wait"] = seconds
        base = self._http.timeout
        timeout = httpx.Timeout(
            connect=base.connect,
            read=None if base.read is None else base.read + seconds,
            write=base.write,
            pool=base.pool,
        )
        return event_batch_from_json(
            self._json("GET", "/v1/events", params=params, timeout=timeout)
        )

    def watch(
        self,
        callback: Callable[[Event], object],
        since: int | None = None,
        binary: str | None = None,
        host: str | None = None,
    ) -> Watcher:
        """Follow the stream on a thread, calling callback(event) for each; stop() ends it.

        The thread long-polls (WATCH_WAIT s at a time), so an event arrives
        as soon as the daemon has it, and stop() returns within WATCH_WAIT.
        """
        validation.cursor(since)
        validation.name("binary", binary, required=False)
        validation.name("host", host, required=False)
        source = _LongPoll(self, WATCH_WAIT)
        return Watcher(source, callback, since, binary, host, poll=WATCH_PAUSE).start()

    # -- claims ------------------------------------------------------------------

    def claim(
        self,
        service: ServiceRef,
        resource_type: str,
        resource_id: str,
        operation: str,
        details: dict[str, Any] | None = None,
        *,
        incarnation: str | None = None,
    ) -> Claim:
        """Claim a resource for `service` (agent token); ClaimHeld names the holder.

        `incarnation` defaults to this client's (self.incarnation).
        """
        body = {
            "service_id": _uuid_of(service),
            "incarnation": self.incarnation if incarnation is None else incarnation,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "operation": operation,
            "details": details,
        }
        return claim_from_json(self._json("POST", "/v1/claims", json=body))

    def renew(
        self,
        claim: Claim,
        details: dict[str, Any] | None = _UNSET,
        *,
        incarnation: str | None = None,
    ) -> Claim:
        """Say the work is progressing (and optionally replace details); ClaimLost if stale."""
        body = self._token_body(claim, incarnation)
        if details is not _UNSET:
            body["details"] = details
        return claim_from_json(self._json("POST", "/v1/claims/renew", json=body, token=claim))

    def release(self, claim: Claim, *, incarnation: str | None = None) -> Claim:
        """Free the resource: the work is done. ClaimLost if the token is stale."""
        body = self._token_body(claim, incarnation)
        return claim_from_json(self._json("POST", "/v1/claims/release", json=body, token=claim))

    def is_current(self, claim: Claim) -> bool:
        """Whether the token still holds: its epoch is the resource's, and live.

        Racy by nature, as in-process: fence writes with claims.fence(claim).
        """
        current = self._current(as_token(claim))
        return current is not None and current.epoch == claim.epoch and current.state in LIVE

    def get_claim(self, resource_type: str, resource_id: str) -> Claim:
        resource_type = validation.kind("resource_type", resource_type)
        resource_id = validation.resource_id(resource_id)
        path = f"/v1/claims/{_quote(resource_type)}/{_quote(resource_id)}"
        return claim_from_json(self._json("GET", path))

    def list_claims(
        self,
        owner: ServiceRef | None = None,
        resource_type: str | None = None,
        state: str | None = None,
    ) -> list[Claim]:
        """Claims by resource; deleted tombstones only when asked for by state."""
        params = {
            "owner": None if owner is None else _uuid_of(owner),
            "resource_type": resource_type,
            "state": state,
        }
        params = {key: value for key, value in params.items() if value is not None}
        body = self._json("GET", "/v1/claims", params=params)
        return [claim_from_json(row) for row in body["claims"]]

    def force_release(self, resource_type: str, resource_id: str, reason: str) -> Claim:
        """Operator override (admin token): free a live claim whoever holds it; audited."""
        body = {"resource_type": resource_type, "resource_id": resource_id, "reason": reason}
        return claim_from_json(self._json("POST", "/v1/claims/force-release", json=body))

    def lost_claims(self, service: ServiceRef, incarnation: str | None = None) -> list[Claim]:
        """Claims this service held in an incarnation other than `incarnation` (default: this
        client's) and did not release itself."""
        uuid = validation.service_id(_uuid_of(service), "service_id")
        mine = self.incarnation if incarnation is None else incarnation
        params = {"incarnation": validation.incarnation(mine)}
        body = self._json("GET", f"/v1/services/{uuid}/lost-claims", params=params)
        return [claim_from_json(row) for row in body["claims"]]

    def _token_body(self, claim: Claim, incarnation: str | None) -> dict[str, Any]:
        """The token renew and release send, once the caller is known to be its incarnation.

        The daemon takes the body's incarnation as both the token's and the
        caller's, so the check ServiceGroup makes (only the incarnation that
        made a claim may renew or release it) is made here, with its answer.
        """
        claim = as_token(claim)
        mine = validation.incarnation(self.incarnation if incarnation is None else incarnation)
        if claim.incarnation != mine:
            raise lost(claim, self._current(claim), "it was made by another incarnation")
        return {
            "service_id": claim.owner,
            "incarnation": claim.incarnation,
            "resource_type": claim.resource_type,
            "resource_id": claim.resource_id,
            "epoch": claim.epoch,
        }

    def _current(self, claim: Claim) -> Claim | None:
        """The claim on the token's resource as it now stands; None when there is none."""
        try:
            return self.get_claim(claim.resource_type, claim.resource_id)
        except NotFound:
            return None

    # -- internals ---------------------------------------------------------------

    def _json(
        self, method: str, path: str, *, token: Claim | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The answer's JSON body: a dict for every endpoint this client calls."""
        body: dict[str, Any] = self._call(method, path, token=token, **kwargs).json()
        return body

    def _call(
        self, method: str, path: str, *, token: Claim | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise BackendError(DAEMON, f"{self.base_url}: {detail}") from exc
        if response.is_success:
            return response
        raise error_from_response(response, token)


class _LongPoll:
    """A Watcher's event source that long-polls the daemon instead of polling it."""

    def __init__(self, client: Client, wait: float) -> None:
        self.client = client
        self.wait = wait

    def events(
        self, since: int | None = None, binary: str | None = None, host: str | None = None
    ) -> EventBatch:
        return self.client.events(since, binary, host, wait=self.wait)


def error_from_response(response: httpx.Response, token: Claim | None = None) -> ServiceGroupError:
    """The exception the daemon's {"error": {...}} body stands for (server/errors.py).

    `token` is the claim a renew or release sent: ClaimLost carries it, as
    in-process, beside the claim as it now stands.
    """
    try:
        detail = response.json()["error"]
        if not isinstance(detail, dict) or "message" not in detail:
            raise TypeError("not an error body")
    except (ValueError, KeyError, TypeError):  # not from the daemon: a proxy's page, say
        detail = {"message": response.text.strip() or response.reason_phrase}
    if response.status_code == 404:
        # A path the daemon does not serve names no record: the path is what is missing.
        detail.setdefault("not_found", {"kind": "path", "key": response.url.path})
    return error_from_detail(response.status_code, detail, token)


def error_from_detail(
    status: int, detail: dict[str, Any], token: Claim | None = None
) -> ServiceGroupError:
    """The exception one error object stands for: a body's, or a failed beat's."""
    message, field = str(detail["message"]), detail.get("field")
    if status in (400, 413, 422):
        # A bad body as a whole (not JSON, too big) has no field; say "request".
        name = field or "request"
        return InvalidInput(name, message.removeprefix(f"{name}: "))
    if status == 401:
        return Unauthorized(message)
    if status == 403:
        return Forbidden(message)
    if status == 404:
        missing = detail.get("not_found") or {"kind": "path", "key": ""}
        return NotFound(missing["kind"], missing["key"])
    if status == 409 and detail.get("kind") in (ClaimHeld.kind, ClaimLost.kind):
        claim = None if detail.get("claim") is None else claim_from_json(detail["claim"])
        if detail["kind"] == ClaimHeld.kind:
            return ClaimHeld(claim, message)
        return ClaimLost(token, claim, message)
    if status >= 500:
        backend = message.removesuffix(" backend unavailable") if status == 503 else DAEMON
        return BackendError(backend, f"HTTP {status}: {message}")
    return ServiceGroupError(f"HTTP {status}: {message}")


def _uuid_of(service: ServiceRef) -> str:
    """The uuid of a Service, or the string given, unvalidated: the daemon names the field."""
    return service.uuid if isinstance(service, Service) else service


def _uuid(service: ServiceRef) -> str:
    """A service's uuid, checked as ServiceGroup checks it: InvalidInput("id"), not a 404."""
    return service.uuid if isinstance(service, Service) else validation.service_id(service)


def _service_path(service: ServiceRef, suffix: str = "") -> str:
    return f"/v1/services/{_uuid(service)}{suffix}"


def _auth_headers(auth_strategy: str, token: str | None) -> dict[str, str]:
    """The header that carries `token` under the daemon's [api] auth_strategy."""
    validation.one_of(auth_strategy, "auth_strategy", AUTH_STRATEGIES)
    if not token:
        return {}
    if auth_strategy == "keystone":
        return {"X-Auth-Token": token}
    return {"Authorization": f"Bearer {token}"}


def _quote(segment: str) -> str:
    # '.' too: httpx removes "." and ".." path segments (RFC 3986 dot-segment
    # removal), so a binary named ".." would ask for /v1/ instead.
    return urllib.parse.quote(segment, safe="").replace(".", "%2E")
