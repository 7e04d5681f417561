"""Every error servicegroup raises on purpose.

Callers (the HTTP layer, the CLI) map these classes to status codes and
exit codes in one place each, so a new error needs no new handler.
"""

from __future__ import annotations


class ServiceGroupError(Exception):
    """Base class, so callers can catch everything servicegroup means to raise."""


class InvalidInput(ServiceGroupError, ValueError):
    """A caller gave a value that breaks a field rule; nothing was written."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class NotFound(ServiceGroupError, LookupError):
    """The named service (or other record) does not exist, or was deleted."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} not found")


class BackendError(ServiceGroupError):
    """A backend (SQL, ZooKeeper, memcached, ...) could not be reached or failed.

    `backend` names the store so that logs and health checks can say which
    one is in trouble without parsing driver-specific exceptions.
    """

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        self.detail = detail
        super().__init__(f"{backend}: {detail}")


class ConfigError(ServiceGroupError):
    """The configuration cannot work (unknown driver, impossible values, ...)."""


class SchemaOutOfDate(ServiceGroupError):
    """The database is not at the latest migration; refuse rather than corrupt it."""


class Unauthorized(ServiceGroupError):
    """No token, or one that is not valid (HTTP 401).

    `challenge` is the WWW-Authenticate the answer carries: how to
    authenticate, Bearer for static tokens, Keystone and where under
    auth_strategy = keystone (the header keystonemiddleware sends).
    """

    def __init__(self, message: str, challenge: str = "Bearer") -> None:
        super().__init__(message)
        self.challenge = challenge


class Forbidden(ServiceGroupError):
    """A valid token whose kind may not do this (HTTP 403), e.g. an agent token on DELETE."""


class ClaimHeld(ServiceGroupError):
    """Someone else holds a live claim on the resource (HTTP 409, kind claim_held).

    `holder` is the Claim that stands in the way: its owner, operation, epoch
    and since when, so the caller can say who to wait for or whom to chase.
    """

    kind = "claim_held"

    def __init__(self, holder: object, message: str) -> None:
        self.holder = holder
        super().__init__(message)


class ClaimLost(ServiceGroupError):
    """The caller's claim token is stale: its epoch moved on, or it was released.

    Nothing was written. The work it covered now belongs to someone else
    (a new owner, or recovery); stop, and do not write under this token again.
    """

    kind = "claim_lost"

    def __init__(self, claim: object, current: object | None, message: str) -> None:
        self.claim = claim
        self.current = current
        super().__init__(message)
