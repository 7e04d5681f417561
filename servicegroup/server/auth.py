"""Bearer tokens for the HTTP API: who may read, heartbeat, or administer.

Three kinds of token, from `[api]` options or files they name: agent tokens
may register, heartbeat and leave; admin tokens may do everything; read
tokens, when any are set, are needed (or any other kind) to read. With no
token configured at all the API is open, which is only safe on loopback,
and tokens sent without TLS can be read on the way: beyond loopback,
`check_exposure()` refuses both unless told `insecure`.

A presented token is compared with EVERY configured token with
hmac.compare_digest and no early exit, so the time taken says nothing about
which token, or how much of one, matched. Tokens are never logged and never
put in an error message.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from oslo_config import cfg

from servicegroup.exceptions import ConfigError, Forbidden, Unauthorized

if TYPE_CHECKING:
    from servicegroup.server.keystone_auth import KeystoneAuth

LOG = logging.getLogger(__name__)


class Level(enum.IntEnum):
    """Access levels; each includes the ones below it."""

    OPEN = 0  # /healthz, /openapi.json
    READ = 1
    AGENT = 2
    ADMIN = 3


_WHAT = {
    Level.READ: "reading",
    Level.AGENT: "registering, heartbeating and leaving",
    Level.ADMIN: "changing or deleting services",
}

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`Authorization: Bearer <token>`. Agent tokens may register, heartbeat and "
    "leave; admin tokens may do everything. Reads (and /metrics) need a token only when "
    "the daemon has read tokens. With no token configured at all, nothing is checked.",
)

# Under [api] auth_strategy = keystone (keystone_auth.py), in place of BEARER: the
# Keystone token in either header, two alternatives in the OpenAPI document.
KEYSTONE_TOKEN = APIKeyHeader(
    name="X-Auth-Token",
    auto_error=False,
    scheme_name="keystone",
    description="`X-Auth-Token: <Keystone token>`, scoped to the daemon's project. The "
    "policy rules servicegroup:read, servicegroup:agent and servicegroup:admin map its "
    "roles to levels (by default reader, service and admin).",
)
KEYSTONE_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="keystone-bearer",
    description="`Authorization: Bearer <Keystone token>`: the same Keystone token as "
    "X-Auth-Token, for clients that can send only Authorization (Prometheus' "
    "credentials_file). Both headers with different tokens: 401.",
)


def describe(level: Level) -> str:
    """What a level allows, for error messages."""
    return _WHAT[level]


def read_token_file(path: str) -> list[str]:
    """One token per line; blank lines and '#' comment lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # The file's path, never its content, goes into the message.
        raise ConfigError(f"cannot read token file {path}: {exc.__class__.__name__}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclass(frozen=True)
class Tokens:
    """The configured tokens of each level, as bytes for compare_digest."""

    read: tuple[bytes, ...] = ()
    agent: tuple[bytes, ...] = ()
    admin: tuple[bytes, ...] = ()

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Tokens:
        api = conf.api

        def load(tokens: Iterable[str], files: Iterable[str]) -> tuple[bytes, ...]:
            found = [t.strip() for t in tokens if t.strip()]
            for path in files:
                found += read_token_file(path)
            return tuple(dict.fromkeys(t.encode() for t in found))

        return cls(
            read=load(api.read_tokens, api.read_token_files),
            agent=load(api.agent_tokens, api.agent_token_files),
            admin=load(api.admin_tokens, api.admin_token_files),
        )

    @property
    def enabled(self) -> bool:
        """Any token at all turns authentication on for every /v1 write."""
        return bool(self.read or self.agent or self.admin)

    @property
    def guards_writes(self) -> bool:
        return bool(self.agent or self.admin)

    def level_of(self, presented: str) -> Level | None:
        """The highest level the token grants, None when it matches nothing.

        Every configured token is compared, whatever matched before.
        """
        candidate = presented.encode()
        level: Level | None = None
        for granted, tokens in (
            (Level.READ, self.read),
            (Level.AGENT, self.agent),
            (Level.ADMIN, self.admin),
        ):
            for token in tokens:
                if hmac.compare_digest(candidate, token) and (level is None or granted > level):
                    level = granted
        return level

    def checks(self, needed: Level) -> bool:
        """Whether a request of this level needs a token at all, with these tokens."""
        if needed is Level.OPEN or not self.enabled:
            return False
        return not (needed is Level.READ and not self.read)

    def check(self, needed: Level, presented: str | None) -> None:
        """Raise Unauthorized (no or unknown token) or Forbidden (too low a level)."""
        if not self.checks(needed):
            return
        if presented is None:
            raise Unauthorized(f"a bearer token is needed for {_WHAT[needed]}")
        level = self.level_of(presented)
        if level is None:
            raise Unauthorized("the bearer token is not valid")
        if level < needed:
            raise Forbidden(f"this token does not allow {_WHAT[needed]}")


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token raw ASGI headers present, read as BEARER reads it (see fast_routes.py).

    HTTPBearer(auto_error=False): the first Authorization header; its
    credentials when the scheme is "bearer" (any case) and both are there,
    else no token at all.
    """
    for name, value in headers:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            scheme, credentials = get_authorization_scheme_param(authorization)
            if authorization and scheme and credentials and scheme.lower() == "bearer":
                return credentials
            return None
    return None


def x_auth_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The Keystone token raw ASGI headers present, read as KEYSTONE_TOKEN reads it.

    APIKeyHeader(auto_error=False): the first X-Auth-Token header; an empty
    one is no token at all.
    """
    for name, value in headers:
        if name == b"x-auth-token":
            return value.decode("latin-1") or None
    return None


class Guard:
    """One FastAPI dependency per level: a route declares its level in one place.

    `tokens` is the one reference every check reads, once per request: the
    token files' reloader (token_rotation.py) swaps a whole new Tokens in, so
    a request sees the old set or the new one, never half of each. Which
    levels are checked at all is decided here, when the routes are built; a
    reload may therefore never change it.

    With `keystone` (auth_strategy = keystone) every level but OPEN takes a
    Keystone token instead, in X-Auth-Token or `Authorization: Bearer`
    (KeystoneAuth.check decides which), and `tokens` are not consulted.
    `authorize` is the check the fast routes make, the same one the
    dependencies make.
    """

    def __init__(self, tokens: Tokens, keystone: KeystoneAuth | None = None) -> None:
        self.tokens = tokens
        self.keystone = keystone
        self.read = self._require(Level.READ)
        self.agent = self._require(Level.AGENT)
        self.admin = self._require(Level.ADMIN)

    async def authorize(self, needed: Level, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """The check of a request seen as raw ASGI headers (fast_routes.py)."""
        if self.keystone is not None:
            await self.keystone.check(needed, x_auth_token(headers), bearer(headers))
        else:
            self.tokens.check(needed, bearer(headers))

    def _require(self, level: Level) -> Any:
        if self.keystone is not None:
            return self._require_keystone(self.keystone, level)
        if not self.tokens.checks(level):
            # No bearer dependency, so the OpenAPI document declares no security
            # for this operation: it describes this daemon, which checks nothing.
            return Depends(_open)

        # async: a few compare_digest calls, no I/O. A plain def would cost
        # every request a trip through the threadpool before its handler.
        async def check(
            credentials: HTTPAuthorizationCredentials | None = Depends(BEARER),  # noqa: B008
        ) -> None:
            self.tokens.check(level, credentials.credentials if credentials else None)

        return Depends(check)

    @staticmethod
    def _require_keystone(keystone: KeystoneAuth, level: Level) -> Any:
        async def check(
            token: str | None = Depends(KEYSTONE_TOKEN),
            credentials: HTTPAuthorizationCredentials | None = Depends(KEYSTONE_BEARER),  # noqa: B008
        ) -> None:
            await keystone.check(level, token, credentials.credentials if credentials else None)

        return Depends(check)


async def _open() -> None:
    """The dependency of a level these tokens do not check."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_exposure(
    host: str, port: int, tokens: Tokens, *, tls: bool, insecure: bool, keystone: bool = False
) -> None:
    """Refuse to serve beyond loopback what anyone on the way could abuse, unless told to.

    Two cases: an open API (no agent or admin token), which anyone who can
    reach it may change; and tokens without TLS, which anyone on the network
    path may read from a request and replay. Behind a TLS-terminating proxy
    on the same host the daemon listens on loopback and neither applies.
    Keystone tokens (`keystone`) guard every level and are as worth stealing.
    """
    if is_loopback(host):
        return
    if not (keystone or tokens.guards_writes):
        risk = "anyone who can reach it could change and delete services"
        if not insecure:
            raise ConfigError(
                f"refusing to listen on {host} with no [api] agent_tokens or admin_tokens: "
                f"{risk}. Configure tokens and TLS, listen on a loopback address, or pass "
                "--insecure"
            )
        LOG.warning(
            "listening on %s:%s with no agent or admin tokens (--insecure): %s", host, port, risk
        )
    if (keystone or tokens.enabled) and not tls:
        risk = "bearer tokens would cross the network in clear text, for anyone on the way to read"
        if not insecure:
            raise ConfigError(
                f"refusing to listen on {host} with [api] tokens but no TLS: {risk}. Set [api] "
                "ssl_certfile and ssl_keyfile, listen on a loopback address behind a TLS "
                "proxy, or pass --insecure"
            )
        LOG.warning("listening on %s:%s with tokens but no TLS (--insecure): %s", host, port, risk)
