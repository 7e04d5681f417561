"""schemathesis against the real daemon, with every check: no 5xx, every answer as documented.

The daemon runs as a subprocess on SQLite and the fuzzer reads its live
/openapi.json, so what is checked is what a client sees over a real socket.
Every check schemathesis has runs, as with `st run --checks all` (ALL_CHECKS),
over the phases that can trigger it:

- fuzzing, per operation and generation mode (test_fuzz_*): not_a_server_error,
  status code / content type / headers / body conformance, positive data
  accepted, negative data rejected, ignored_auth;
- examples, coverage and stateful, through schemathesis' own engine as
  `st run` drives it (test_every_check_in_the_other_phases_*): every
  boundary and negation of every parameter, every method the document does
  not declare (unsupported_method, allow_header_conformance: a 405 must
  list every method of its path in Allow), a missing required header, and
  sequences along the API's links (use_after_free,
  ensure_resource_availability; MAX_EXAMPLES scenarios).

A disagreement is fixed in the spec or the code; the two checks left out
are in EXCLUDED_CHECKS, with why. Runs twice: with no token (the loopback
default: the document then declares no security) and with read, agent and
admin tokens, sending the admin token, so the guarded paths and the auth
checks (a request without or with a bad token must get 401) are exercised.

Bounded and deterministic: derandomized Hypothesis, MAX_EXAMPLES per
operation and generation mode (positive: schema-valid data, which must be
accepted; negative: schema-violating data, which must be rejected with a
documented 4xx); the coverage phase is deterministic by design. The fuzzing
runs are driven through operation.as_strategy() rather than schemathesis'
pytest plugin, whose lazy loader breaks on pytest 9 (it sets the private
Function._nodeid).
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
from schemathesis.engine import Status, events, from_schema  # noqa: E402

from tests.functional.daemon import Daemon, free_port, write_config  # noqa: E402
from tests.functional.test_daemon import TIMINGS, migrated_sqlite  # noqa: E402

MAX_EXAMPLES = 15
ADMIN, AGENT, READ = "fuzz-admin-token", "fuzz-agent-token", "fuzz-read-token"
# A long poll that waits its full `wait` is correct, but costs wall time the
# suite does not have; the bounds of `wait` (0..60, else 400) are still fuzzed
# (anything outside (LONG_POLL_CAP, 60] is sent as generated) and tested in
# test_hostile_input.py.
LONG_POLL_CAP = 0.1
ALL_CHECKS = ["all"]
EXCLUDED_CHECKS = [
    # A response-time limit (10 s by default) is a timed assertion, which this
    # suite does not make (timings are reported as figures, doc/benchmarks.md);
    # and the API's long poll is meant to hold a request for up to 60 s.
    "max_response_time",
    # Object-level authorization (BOLA) asks whether one user can reach another
    # user's objects; the daemon has no per-user objects: a token's kind
    # (read, agent, admin) is all that decides, and the auth checks cover it.
    # schemathesis runs it only with two users configured as WFC peers.
    "object_level_authorization",
]
# What schemathesis' engine runs here: every phase but fuzzing, which the
# per-operation tests (test_fuzz_*) do with their own bounds and statistics.
ENGINE_PHASES = ["examples", "coverage", "stateful"]

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


def _schema(daemon: Daemon, token: str | None = None) -> Any:
    """The daemon's live document, every check enabled, sending `token` if given."""
    schema = schemathesis.openapi.from_url(f"{daemon.url}/openapi.json")
    schema.config.checks.update(
        included_check_names=ALL_CHECKS, excluded_check_names=EXCLUDED_CHECKS
    )
    # MAX_EXAMPLES bounds the stateful phase's scenarios too; coverage has no bound.
    schema.config.generation.update(deterministic=True, max_examples=MAX_EXAMPLES)
    schema.config.update(request_timeout=30)
    if token is None:
        return schema

    @schema.auth()
    class AdminToken:
        """The admin token on every case, except where a negative case drops
        or breaks Authorization on purpose (schemathesis then expects 401)."""

        def get(self, case: Any, context: Any) -> str:
            return token

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """A `wait` in (LONG_POLL_CAP, 60] is sent as LONG_POLL_CAP, in every phase.

    A global hook (only this module uses schemathesis): Case.call runs it for
    the per-operation tests and for the engine's phases alike, and
    schemathesis re-judges the case after it. The coverage phase sends
    `wait` as text ("59"), the others as a number.
    """
    query = case.query or {}
    wait = query.get("wait")
    if isinstance(wait, bool):
        return
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return
    if LONG_POLL_CAP < seconds <= 60:
        query["wait"] = LONG_POLL_CAP


@pytest.fixture(scope="module")
def open_schema(open_daemon: Daemon) -> Any:
    return _schema(open_daemon)


@pytest.fixture(scope="module")
def tokens_schema(tokens_daemon: Daemon) -> Any:
    return _schema(tokens_daemon, ADMIN)


def _call(case: Any, variant: str) -> None:
    stats = STATS[variant]
    stats["examples"] += 1
    stats[f"op {case.operation.label}"] += 1
    try:
        response = case.call_and_validate(timeout=30)
    except Exception:
        stats["failures"] += 1
        raise
    _count(stats, response.status_code)


def _count(stats: Counter[str], status: int) -> None:
    stats[f"status {status}"] += 1
    if status >= 500:
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
    "GET /v1/binaries/{binary}/times",
    "GET /v1/events",
    "POST /v1/claims",
    "GET /v1/claims",
    "GET /v1/claims/{resource_type}/{resource_id}",
    "POST /v1/claims/renew",
    "POST /v1/claims/release",
    "POST /v1/claims/force-release",
    "GET /v1/services/{id}/lost-claims",
    "GET /v1/summary",
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


def _run_engine(schema: Any, variant: str) -> list[str]:
    """ENGINE_PHASES over `schema`, as `st run` runs them; every failure and error, as text."""
    schema.config.phases.update(phases=ENGINE_PHASES)
    stats, problems = STATS[variant], []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            stats[f"phase {event.phase.name.lower()}"] += 1
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    _count(stats, interaction.response.status_code)
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    info = node.failure_info
                    if node.status is Status.FAILURE and info is not None:
                        failure = info.failure
                        problems.append(
                            f"{event.label}: {failure.title}\n{failure.message}\n{info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            problems += [f"{failure.title}\n{failure.message}" for failure in event.failures]
    return list(dict.fromkeys(problems))  # a failure found again while shrinking, once


def test_every_check_in_the_other_phases_open_daemon(open_daemon: Daemon) -> None:
    problems = _run_engine(_schema(open_daemon), "open")
    assert not problems, "\n\n".join(problems)


def test_every_check_in_the_other_phases_daemon_with_tokens(tokens_daemon: Daemon) -> None:
    problems = _run_engine(_schema(tokens_daemon, ADMIN), "tokens")
    assert not problems, "\n\n".join(problems)


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
