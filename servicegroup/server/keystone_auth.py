"""Keystone tokens (`[api] auth_strategy = keystone`): validated once, then cached.

keystonemiddleware's auth_token is WSGI middleware and this daemon is ASGI,
so it validates tokens the way auth_token does underneath: a keystoneauth1
session authenticated as the daemon's own service user (`[keystone_authtoken]`)
asks `GET /v3/auth/tokens` with the token in X-Subject-Token. Keystone
answers 404 for a token that is unknown, expired or revoked.

That round trip is blocking I/O of a few milliseconds, so it runs in a
thread; the event loop never waits on Keystone. A token that validated is
trusted for `token_cache_ttl` seconds (never past its own expiry) without
asking again, and a cache hit stays on the loop: a fleet's agents all beat
with a handful of tokens, and Keystone sees each of them once per TTL, not
once per beat. The price is that a revoked token keeps working here for up
to the TTL, as with auth_token's own cache (doc/operations.md). Concurrent
misses of one token share one validation: when a shared service token's
entry expires, its next beats wait for one request to Keystone, not one each.

The cache is keyed by a SHA-256 of the token, so no token is kept in memory
beyond the request that carried it, and none is ever logged or put in an
error. Only tokens that validated are cached: an invalid token costs a
round trip every time, which keeps a typo from being remembered as a
refusal after it is fixed.

The policy (keystone_policy.py) is asked on every request, hit or miss,
so a changed policy file applies at once.

The token comes in X-Auth-Token, OpenStack's convention, or in
`Authorization: Bearer`, for clients that can send nothing else: Prometheus
2.42 sends a scrape's token only as Authorization (credentials_file), and a
browser's fetch() could send either. `KeystoneAuth.check` alone decides
which, for the FastAPI routes and the fast routes alike.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keystoneauth1 import access
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from servicegroup.clock import SYSTEM_CLOCK, Clock, as_utc
from servicegroup.exceptions import BackendError, ConfigError, Forbidden, Unauthorized
from servicegroup.server.auth import Level, describe
from servicegroup.server.keystone_policy import KeystonePolicy

GROUP = "keystone_authtoken"
HEADER = "X-Auth-Token"
HEADERS = f"{HEADER}, or Authorization: Bearer"


@dataclass(frozen=True)
class Validated:
    """What Keystone said of a valid token: the policy's credentials, and its expiry."""

    credentials: dict[str, Any]
    expires: datetime | None


Validate = Callable[[str], "Validated | None"]


class KeystoneValidator:
    """Asks Keystone about one token, as the daemon's service user. Blocking."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        # keystoneauth1's own options (conf.py lists them for the sample only).
        ks_loading.register_auth_conf_options(conf, GROUP)
        ks_loading.register_session_conf_options(conf, GROUP)
        group = conf[GROUP]
        if not group.auth_type:
            conf.set_default("auth_type", "password", group=GROUP)
        try:
            plugin = ks_loading.load_auth_from_conf_options(conf, GROUP)
        except ks_exceptions.ClientException as exc:
            raise ConfigError(f"[{GROUP}] cannot load the service user: {exc}") from None
        except cfg.Error as exc:
            raise ConfigError(f"[{GROUP}] {exc}") from None
        self._session = ks_loading.load_session_from_conf_options(conf, GROUP, auth=plugin)
        self._endpoint = {
            "service_type": "identity",
            "interface": group.interface,
            "version": (3, 0),
        }

    def __call__(self, token: str) -> Validated | None:
        try:
            response = self._session.get(
                "/auth/tokens",
                endpoint_filter=self._endpoint,
                headers={"X-Subject-Token": token},
                raise_exc=False,
            )
        except ks_exceptions.ClientException as exc:
            # The exception's class, never its text: it may quote the request.
            raise BackendError("keystone", exc.__class__.__name__) from None
        if response.status_code in (401, 404):
            return None
        if response.status_code != 200:
            raise BackendError("keystone", f"token validation answered {response.status_code}")
        info = access.create(body=response.json(), auth_token=token)
        credentials = {
            "user_id": info.user_id,
            "project_id": info.project_id,
            "domain_id": info.domain_id,
            "roles": list(info.role_names or ()),
        }
        return Validated(credentials, as_utc(info.expires))


class TokenCache:
    """Validated tokens by SHA-256, for at most `ttl` seconds and `size` entries (LRU)."""

    def __init__(self, ttl: float, size: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Validated]] = OrderedDict()

    def get(self, key: bytes) -> Validated | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        deadline, validated = entry
        if self.clock.monotonic() >= deadline:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return validated

    def put(self, key: bytes, validated: Validated) -> None:
        """Keep it until the TTL or the token's own expiry, whichever comes first."""
        lifetime = self.ttl
        if validated.expires is not None:
            lifetime = min(lifetime, (validated.expires - self.clock.now()).total_seconds())
        if lifetime <= 0:
            return
        self._entries[key] = (self.clock.monotonic() + lifetime, validated)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class KeystoneAuth:
    """The check both the FastAPI routes and the fast routes make under keystone."""

    def __init__(
        self,
        validate: Validate,
        policy: KeystonePolicy,
        cache: TokenCache,
        challenge: str = "Keystone",
    ) -> None:
        self.validate = validate
        self.policy = policy
        self.cache = cache
        self.challenge = challenge  # WWW-Authenticate of a 401
        self._pending: dict[bytes, asyncio.Future[Validated | None]] = {}

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, clock: Clock = SYSTEM_CLOCK) -> KeystoneAuth:
        group = conf[GROUP]
        if not group.accepted_project_id:
            raise ConfigError(
                f"[{GROUP}] accepted_project_id is required with [api] auth_strategy = keystone"
            )
        validator = KeystoneValidator(conf)
        # Where to get a token, as keystonemiddleware says it; auth_url exists for the
        # password plugin (and most others), registered by now.
        auth_url = group.auth_url if "auth_url" in group else None
        return cls(
            validator,
            KeystonePolicy(conf, group.accepted_project_id),
            TokenCache(group.token_cache_ttl, group.token_cache_size, clock),
            f'Keystone uri="{auth_url}"' if auth_url else "Keystone",
        )

    async def check(
        self, needed: Level, x_auth_token: str | None, bearer: str | None = None
    ) -> None:
        """Raise Unauthorized (no token, two, or one Keystone refuses) or Forbidden (the policy).

        `x_auth_token` and `bearer` are what the request's X-Auth-Token and
        `Authorization: Bearer` carry, None when absent.
        """
        if needed is Level.OPEN:
            return
        token = self._presented(x_auth_token, bearer)
        if token is None:
            raise Unauthorized(
                f"a Keystone token ({HEADERS}) is needed for {describe(needed)}", self.challenge
            )
        validated = await self._validated(token)
        if validated is None:
            raise Unauthorized("the Keystone token is not valid", self.challenge)
        if not self.policy.allows(needed, validated.credentials):
            raise Forbidden(f"this token does not allow {describe(needed)}")

    def _presented(self, x_auth_token: str | None, bearer: str | None) -> str | None:
        """The one token a request presents, from whichever of the two headers carries it.

        Two different tokens are refused, not ranked: the client meant one of
        them and cannot know which a precedence rule would pick, and a proxy
        that adds one header in front of a client that sends the other would
        otherwise decide, silently, whose identity a request carries. The
        same token twice is one token.
        """
        if x_auth_token is not None and bearer is not None and x_auth_token != bearer:
            raise Unauthorized(
                f"{HEADER} and Authorization: Bearer carry different tokens: send one "
                "Keystone token, in either header",
                self.challenge,
            )
        return x_auth_token if x_auth_token is not None else bearer

    async def _validated(self, token: str) -> Validated | None:
        key = hashlib.sha256(token.encode()).digest()
        validated = self.cache.get(key)
        if validated is not None:
            return validated
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Validated | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            validated = await asyncio.to_thread(self.validate, token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when none waited
            raise
        finally:
            del self._pending[key]
        if validated is not None:
            self.cache.put(key, validated)
        future.set_result(validated)
        return validated
