"""Keystone token checks with a fake validator and clock: the cache, its bounds, coalescing.

The real round trip to Keystone is tested in tests/functional/test_keystone_auth.py.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from servicegroup.clock import Clock
from servicegroup.conf import make_conf
from servicegroup.exceptions import BackendError, ConfigError, Forbidden, Unauthorized
from servicegroup.server import errors
from servicegroup.server.auth import Guard, Level, Tokens, x_auth_token
from servicegroup.server.keystone_auth import KeystoneAuth, TokenCache, Validated
from servicegroup.server.keystone_policy import KeystonePolicy

FLEET = "fleet-project-id"
START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock(Clock):
    def __init__(self) -> None:
        self.elapsed = 0.0

    def now(self) -> datetime:
        return START + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed


class FakeKeystone:
    """Tokens it knows, by value; counts the validations it was asked for."""

    def __init__(self) -> None:
        self.tokens: dict[str, Validated] = {}
        self.calls = 0
        self.gate: threading.Event | None = None

    def add(self, token: str, *roles: str, expires_in: float = 3600.0) -> None:
        credentials: dict[str, Any] = {"project_id": FLEET, "roles": list(roles)}
        self.tokens[token] = Validated(credentials, START + timedelta(seconds=expires_in))

    def __call__(self, token: str) -> Validated | None:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        return self.tokens.get(token)


def make_auth(
    keystone: FakeKeystone, clock: FakeClock, ttl: float = 300.0, size: int = 100
) -> KeystoneAuth:
    return KeystoneAuth(keystone, KeystonePolicy(make_conf(), FLEET), TokenCache(ttl, size, clock))


def test_levels_and_refusals() -> None:
    keystone, clock = FakeKeystone(), FakeClock()
    keystone.add("agent-tok", "service")
    auth = make_auth(keystone, clock)

    async def scenario() -> None:
        await auth.check(Level.AGENT, "agent-tok")
        await auth.check(Level.READ, "agent-tok")
        with pytest.raises(Forbidden, match="does not allow changing or deleting services"):
            await auth.check(Level.ADMIN, "agent-tok")
        with pytest.raises(
            Unauthorized, match=r"X-Auth-Token, or Authorization: Bearer\) is needed"
        ):
            await auth.check(Level.READ, None)
        with pytest.raises(Unauthorized, match="not valid") as info:
            await auth.check(Level.READ, "unknown-tok")
        assert "unknown-tok" not in str(info.value)
        await auth.check(Level.OPEN, None)

    asyncio.run(scenario())


def test_a_hit_asks_keystone_nothing_until_the_ttl() -> None:
    keystone, clock = FakeKeystone(), FakeClock()
    keystone.add("tok", "reader")
    auth = make_auth(keystone, clock, ttl=60.0)

    async def scenario() -> None:
        for _ in range(5):
            await auth.check(Level.READ, "tok")
        assert keystone.calls == 1
        del keystone.tokens["tok"]  # revoked in Keystone: trusted until the TTL
        clock.elapsed = 59.9
        await auth.check(Level.READ, "tok")
        assert keystone.calls == 1
        clock.elapsed = 60.0
        with pytest.raises(Unauthorized):
            await auth.check(Level.READ, "tok")
        assert keystone.calls == 2

    asyncio.run(scenario())


def test_the_cache_ends_with_the_token() -> None:
    keystone, clock = FakeKeystone(), FakeClock()
    keystone.add("tok", "reader", expires_in=10.0)
    auth = make_auth(keystone, clock, ttl=300.0)

    async def scenario() -> None:
        await auth.check(Level.READ, "tok")
        del keystone.tokens["tok"]  # Keystone's answer once it expired
        clock.elapsed = 10.0
        with pytest.raises(Unauthorized):
            await auth.check(Level.READ, "tok")

    asyncio.run(scenario())


def test_zero_ttl_and_refusals_are_not_cached() -> None:
    keystone, clock = FakeKeystone(), FakeClock()
    keystone.add("tok", "reader")
    auth = make_auth(keystone, clock, ttl=0.0)

    async def scenario() -> None:
        await auth.check(Level.READ, "tok")
        await auth.check(Level.READ, "tok")
        for _ in range(2):
            with pytest.raises(Unauthorized):
                await auth.check(Level.READ, "bad")

    asyncio.run(scenario())
    assert keystone.calls == 4
    assert len(auth.cache) == 0


def test_the_cache_keeps_the_most_recently_used() -> None:
    clock = FakeClock()
    cache = TokenCache(ttl=300.0, size=2, clock=clock)
    entry = Validated({"roles": []}, None)
    cache.put(b"a", entry)
    cache.put(b"b", entry)
    assert cache.get(b"a") is entry  # a is now the most recent
    cache.put(b"c", entry)
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is entry and cache.get(b"c") is entry


def test_concurrent_misses_of_one_token_share_one_validation() -> None:
    keystone, clock = FakeKeystone(), FakeClock()
    keystone.add("tok", "service")
    keystone.gate = threading.Event()
    auth = make_auth(keystone, clock)

    async def scenario() -> None:
        checks = [asyncio.create_task(auth.check(Level.AGENT, "tok")) for _ in range(20)]
        await asyncio.sleep(0.05)
        keystone.gate.set()  # type: ignore[union-attr]
        await asyncio.gather(*checks)

    asyncio.run(scenario())
    assert keystone.calls == 1


def test_keystone_down_is_a_backend_error_for_every_waiter() -> None:
    clock = FakeClock()

    def down(_token: str) -> Validated | None:
        raise BackendError("keystone", "ConnectFailure")

    auth = KeystoneAuth(down, KeystonePolicy(make_conf(), FLEET), TokenCache(300.0, 10, clock))

    async def scenario() -> list[BaseException | None]:
        checks = [auth.check(Level.READ, "tok") for _ in range(3)]
        return await asyncio.gather(*checks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(result, BackendError) for result in results)


def test_the_project_is_required() -> None:
    conf = make_conf(api__auth_strategy="keystone")
    with pytest.raises(ConfigError, match="accepted_project_id is required"):
        KeystoneAuth.from_conf(conf)


def test_x_auth_token_is_read_as_fastapi_reads_it() -> None:
    assert x_auth_token([(b"x-auth-token", b"a"), (b"x-auth-token", b"b")]) == "a"
    assert x_auth_token([(b"x-auth-token", b"")]) is None
    assert x_auth_token([(b"authorization", b"Bearer a")]) is None


def test_the_token_comes_in_either_header_and_two_different_ones_are_refused() -> None:
    keystone, clock = FakeKeystone(), FakeClock()
    keystone.add("tok", "reader")
    keystone.add("other", "admin")
    auth = make_auth(keystone, clock)

    async def scenario() -> None:
        await auth.check(Level.READ, "tok", None)
        await auth.check(Level.READ, None, "tok")
        await auth.check(Level.READ, "tok", "tok")  # the same token twice is one token
        with pytest.raises(Unauthorized, match="carry different tokens") as info:
            await auth.check(Level.READ, "tok", "other")
        assert "tok" not in str(info.value).replace("token", "")
        with pytest.raises(Unauthorized, match="carry different tokens"):
            await auth.check(Level.READ, "other", "tok")  # no header outranks the other
        assert keystone.calls == 1  # refused before Keystone is asked

    asyncio.run(scenario())


def _keystone_app(auth: KeystoneAuth) -> tuple[Guard, TestClient]:
    guard = Guard(Tokens(), auth)
    app = FastAPI()
    errors.install(app)

    @app.get("/read", dependencies=[guard.read])
    async def read() -> dict[str, str]:
        return {}

    return guard, TestClient(app)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Auth-Token": "tok"}, 200),
        ({"Authorization": "Bearer tok"}, 200),
        ({"Authorization": "bearer tok"}, 200),
        ({"X-Auth-Token": "tok", "Authorization": "Bearer tok"}, 200),
        ({"X-Auth-Token": "tok", "Authorization": "Basic dG9rOg=="}, 200),
        ({"X-Auth-Token": "", "Authorization": "Bearer tok"}, 200),
        ({"X-Auth-Token": "tok", "Authorization": "Bearer other"}, 401),
        ({"Authorization": "Basic dG9rOg=="}, 401),
        ({}, 401),
    ],
)
def test_the_routes_and_the_fast_routes_read_the_same_header(
    headers: dict[str, str], expected: int
) -> None:
    """Guard's dependency (FastAPI) and Guard.authorize (raw ASGI headers) agree."""
    keystone = FakeKeystone()
    keystone.add("tok", "reader")
    keystone.add("other", "reader")
    guard, client = _keystone_app(make_auth(keystone, FakeClock()))
    answer = client.get("/read", headers=headers)
    assert answer.status_code == expected, answer.text
    if expected == 401:
        assert answer.headers["WWW-Authenticate"] == "Keystone"
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def fast() -> int:
        try:
            await guard.authorize(Level.READ, raw)
        except Unauthorized:
            return 401
        return 200

    assert asyncio.run(fast()) == expected


def test_openapi_offers_either_header_under_keystone() -> None:
    _, client = _keystone_app(make_auth(FakeKeystone(), FakeClock()))
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["keystone"] == {**schemes["keystone"], "type": "apiKey", "name": "X-Auth-Token"}
    bearer = schemes["keystone-bearer"]
    assert bearer == {**bearer, "type": "http", "scheme": "bearer"}
    # Two requirement objects: either one satisfies the operation (OpenAPI's "or").
    assert doc["paths"]["/read"]["get"]["security"] == [{"keystone": []}, {"keystone-bearer": []}]
