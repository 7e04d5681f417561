"""A whole-fleet response is followed by malloc_trim; a small one is not (server/app.py)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.background import BackgroundTask

from servicegroup import ServiceGroup
from servicegroup.server import app as server_app
from tests.helpers import wait_for
from tests.live import serve_in_thread


def test_metrics_and_long_lists_give_memory_back_after_the_response(
    sqlite_url: str, make_group: Callable[..., ServiceGroup], monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(server_app, "_GIVE_BACK", BackgroundTask(lambda: trims.append(1)))
    group = make_group(sqlite_url)
    group.register("compute-0", "small")
    with (
        serve_in_thread(server_app.create_app(group)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        # The trim runs after the response is sent, so it is waited for.
        assert http.get("/v1/services", params={"binary": "small"}).status_code == 200
        assert http.get("/metrics").status_code == 200
        wait_for(lambda: len(trims) == 1, "a trim after /metrics")
        for i in range(1001):
            group.register(f"compute-{i}", "large")
        listed = http.get("/v1/services", params={"binary": "large"})
        assert listed.status_code == 200 and len(listed.json()["services"]) == 1001
        wait_for(lambda: len(trims) == 2, "a trim after a list of 1,001")
        # The list of one, answered first, never trimmed (its trim would
        # have run long before the two waited for above).
        assert trims == [1, 1]
