"""schemathesis against the real daemon: no 5xx, and every answer as documented.

The daemon runs as a subprocess on SQLite and the fuzzer reads its live
/openapi.json, so what is checked is what a client sees over a real socket.
Every built-in check schemathesis enables by default runs (not_a_server_error,
status code / content type / headers / body conformance, positive data
accepted, negative data rejected, ...), none is excluded: a disagreement is
fixed in the spec or the code. Runs twice: with no token (the loopback
default: the document then declares no security) and with read, agent and
admin tokens, sending the admin token, so the guarded paths and the auth
checks (a request without or with a bad token must get 401) are exercised.

Bounded and deterministic: derandomized Hypothesis, MAX_EXAMPLES per
operation and generation mode (positive: schema-valid data, which must be
accepted; negative: schema-violating data, which must be rejected with a
documented 4xx). Driven through operation.as_strategy() rather than
schemathesis' pytest plugin, whose lazy loader breaks on pytest 9 (it sets
the private Function._nodeid).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.functional.daemon import Daemon, free_port, write_config  # noqa: E402
from tests.functional.test_daemon import TIMINGS, migrated_sqlite  # noqa: E402

MAX_EXAMPLES = 30
ADMIN, AGENT, READ = "fuzz-admin-token", "fuzz-agent-token", "fuzz-read-token"
# A long poll that waits its full `wait` is correct, but costs wall time the
# suite does not have; the bounds of `wait` (0..60, else 400) are still fuzzed
# (anything outside (LONG_POLL_CAP, 60] is sent as generated) and tested in
# test_hostile_input.py.
LONG_POLL_CAP = 0.1

STATS: dict[str, Counter[str]] = {"open": Counter(), "tokens": Counter()}


def _daemon(tmp: Path, **api: str) -> Daemon:
    port = free_port()
    config = write_config(tmp / "sg.conf", migrated_sqlite(tmp / "sg.sqlite"), port, **TIMINGS)
    if api:
        with config.open("a") as f:
            f.writelines(f"{key} = {value}\n" for key, value in api.items())
    return Daemon(config, port, tmp / "daemon.log").start().wait_ready()


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = _daemon(tmp_path_factory.mktemp("fuzz-open"))
    yield daemon
    daemon.stop()
    _assert_clean_log(daemon)


@pytest.fixture(scope="module")
def tokens_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = _daemon(
        tmp_path_factory.mktemp("fuzz-tokens"),
        admin_tokens=ADMIN,
        agent_tokens=AGENT,
        read_tokens=READ,
    )
    yield daemon
    daemon.stop()
    _assert_clean_log(daemon)


def _assert_clean_log(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log, log
    assert "unexpected error" not in log, log


@pytest.fixture(scope="module")
def open_schema(open_daemon: Daemon) -> Any:
    return schemathesis.openapi.from_url(f"{open_daemon.url}/openapi.json")


@pytest.fixture(scope="module")
def tokens_schema(tokens_daemon: Daemon) -> Any:
    schema = schemathesis.openapi.from_url(f"{tokens_daemon.url}/openapi.json")

    @schema.auth()
    class AdminToken:
        """The admin token on every case, except where a negative case drops
        or breaks Authorization on purpose (schemathesis then expects 401)."""

        def get(self, case: Any, context: Any) -> str:
            return ADMIN

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


def _call(case: Any, variant: str) -> None:
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and LONG_POLL_CAP < wait <= 60:
        case.query["wait"] = LONG_POLL_CAP
    stats = STATS[variant]
    stats["examples"] += 1
    stats[f"op {case.operation.label}"] += 1
    try:
        response = case.call_and_validate(timeout=30)
    except Exception:
        stats["failures"] += 1
        raise
    stats[f"status {response.status_code}"] += 1
    if response.status_code >= 500:
        stats["5xx"] += 1


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    # A real daemon is slower than Hypothesis expects of a pure function, and
    # names with a 6 KB pattern make large examples; neither is a bug here.
    suppress_health_check=list(HealthCheck),
)

# Every operation the daemon serves; test_the_fuzzer_sees_every_operation
# fails if the document has one more or one fewer, so none is left out.
OPERATIONS = [
    "GET /healthz",
    "GET /metrics",
    "POST /v1/services",
    "GET /v1/services",
    "GET /v1/services/{id}",
    "PATCH /v1/services/{id}",
    "DELETE /v1/services/{id}",
    "POST /v1/services/{id}/heartbeat",
    "POST /v1/services/{id}/leave",
    "POST /v1/heartbeats",
    "GET /v1/versions/{binary}",
    "GET /v1/events",
    "POST /v1/claims",
    "GET /v1/claims",
    "GET /v1/claims/{resource_type}/{resource_id}",
    "POST /v1/claims/renew",
    "POST /v1/claims/release",
    "POST /v1/claims/force-release",
    "GET /v1/services/{id}/lost-claims",
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def _fuzz(schema: Any, label: str, mode: GenerationMode, variant: str) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _call(case, variant)

    try:
        run()
    except Unsatisfiable:
        # Only an operation with no input at all (GET /healthz; GET /metrics
        # without tokens) has nothing to make invalid.
        assert mode is GenerationMode.NEGATIVE, label
        assert not _has_inputs(operation), label
        pytest.skip(f"{label} takes no input: no schema-violating request exists")


def _has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_open_daemon(open_schema: Any, label: str, mode: GenerationMode) -> None:
    _fuzz(open_schema, label, mode, "open")


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_daemon_with_tokens(tokens_schema: Any, label: str, mode: GenerationMode) -> None:
    _fuzz(tokens_schema, label, mode, "tokens")


def test_the_fuzzer_sees_every_operation(open_schema: Any, tokens_schema: Any) -> None:
    for schema in (open_schema, tokens_schema):
        labels = {result.ok().label for result in schema.get_all_operations()}
        assert labels == set(OPERATIONS)


def test_fuzz_runs_found_no_5xx() -> None:
    """After the fuzz runs of this module (pytest runs them first, in file order)."""
    ran = {variant: stats for variant, stats in STATS.items() if stats["examples"]}
    if not ran:
        pytest.skip("no fuzz run in this session")
    for variant, stats in ran.items():
        print(f"fuzz {variant}: {dict(sorted(stats.items()))}")
        assert stats["5xx"] == 0
