"""The admin CLI, run in-process through main() against a real SQLite file.

Services are registered through the Python API and then inspected and
changed through the CLI, so the two are checked against each other.
"""

from __future__ import annotations

import configparser
import json
import logging
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicegroup import ServiceGroup, cli
from servicegroup.db import migration
from servicegroup.db.engine import make_engine

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fleet:
    group: ServiceGroup
    config: Path
    ids: dict[str, str]  # "host/binary" -> uuid


def write_config(path: Path, url: str, extra: str = "") -> Path:
    path.write_text(f"[DEFAULT]\n{extra}\n[database]\nconnection = {url}\n")
    return path


def migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        migration.upgrade(engine)
    finally:
        engine.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("servicegroup: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sg.sqlite'}"


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    return write_config(tmp_path / "servicegroup.conf", db_url)


@pytest.fixture
def fleet(db_url: str, config: Path) -> Iterator[Fleet]:
    """Four services: two up, one never seen, one forced down and disabled."""
    migrate(db_url)
    with ServiceGroup.from_options(database__connection=db_url) as group:
        a = group.register("host-a", "nova-compute", "compute", "az1", version=3)
        b = group.register("host-b", "nova-compute", "compute", "az2", version=5)
        c = group.register("host-c", "nova-compute", "compute", "az1", version=1)
        s = group.register("host-a", "nova-scheduler", "scheduler", version=7)
        group.heartbeat(a)
        group.heartbeat(s)
        group.set_forced_down(c, True)
        group.set_disabled(c, True, "disk failed")
        ids = {f"{x.host}/{x.binary}": x.uuid for x in (a, b, c, s)}
        yield Fleet(group, config, ids)


def cfg_args(fleet: Fleet) -> list[str]:
    return ["--config-file", str(fleet.config)]


# -- parsing and help ------------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("db", "serve", "service", "version", "--config-file", "Exit codes"):
        assert command in out


def test_service_help_lists_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "service", "--help")
    assert code == 0
    for action in ("list", "show", "enable", "disable", "force-down", "delete"):
        assert action in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "required: COMMAND"),
        (["service"], "required: ACTION"),
        (["service", "list", "--state", "sideways"], "invalid choice: 'sideways'"),
        (["service", "show"], "required: ID"),
        (["version", "median", "nova"], "invalid choice: 'median'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert_one_line_error(err, fragment, "--help")


def test_main_leaves_root_logger_as_it_found_it(
    capsys: pytest.CaptureFixture[str], fleet: Fleet
) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    run(capsys, *cfg_args(fleet), "service", "list")
    run(capsys, *cfg_args(fleet), "service", "show", "not-a-uuid")
    assert (list(root.handlers), root.level) == before


# -- db ------------------------------------------------------------------------


def test_db_upgrade_is_idempotent_and_db_version_reports(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    args = ["--config-file", str(config)]
    head = migration.head()

    code, out, _ = run(capsys, *args, "db", "version")
    assert code == 0
    assert out.splitlines() == ["current: none", f"head: {head}"]

    code, out, _ = run(capsys, *args, "db", "upgrade")
    assert code == 0
    assert out.strip() == f"database upgraded from none to revision {head}"

    code, out, _ = run(capsys, *args, "db", "upgrade")
    assert code == 0
    assert out.strip() == f"database already at revision {head}"

    code, out, _ = run(capsys, *args, "db", "version")
    assert out.splitlines() == [f"current: {head}", f"head: {head}"]


def test_unmigrated_database_names_the_fix(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = run(capsys, "--config-file", str(config), "service", "list")
    assert code == cli.EXIT_FAILURE
    assert out == ""
    assert_one_line_error(err, "servicegroup db upgrade")


def test_unreachable_database_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "x.conf", f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.db'}")
    code, _, err = run(capsys, "--config-file", str(config), "db", "upgrade")
    assert code == cli.EXIT_FAILURE
    assert_one_line_error(err, "database:")


# -- configuration ---------------------------------------------------------------


def test_config_file_may_follow_the_command(
    capsys: pytest.CaptureFixture[str], fleet: Fleet
) -> None:
    code, out, _ = run(capsys, "service", "list", "--format", "json", *cfg_args(fleet))
    assert code == 0
    assert len(json.loads(out)["services"]) == 4


def test_default_config_location_applies_without_config_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".servicegroup").mkdir(parents=True)
    db = tmp_path / "from-home.sqlite"
    write_config(home / ".servicegroup" / "servicegroup.conf", f"sqlite:///{db}")
    monkeypatch.setenv("HOME", str(home))

    code, _, _ = run(capsys, "db", "upgrade")
    assert code == 0
    assert db.exists()


def test_explicit_config_file_replaces_the_defaults(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".servicegroup").mkdir(parents=True)
    default_db, explicit_db = tmp_path / "default.sqlite", tmp_path / "explicit.sqlite"
    write_config(home / ".servicegroup" / "servicegroup.conf", f"sqlite:///{default_db}")
    explicit = write_config(tmp_path / "explicit.conf", f"sqlite:///{explicit_db}")
    monkeypatch.setenv("HOME", str(home))

    code, _, _ = run(capsys, "--config-file", str(explicit), "db", "upgrade")
    assert code == 0
    assert explicit_db.exists()
    assert not default_db.exists()


@pytest.mark.parametrize(
    "contents, fragment",
    [
        ("garbage\n", "configuration: Failed to parse"),
        ("[DEFAULT]\nreport_interval = often\n", "report_interval"),
        ("[DEFAULT]\ndriver = carrier-pigeon\n", "unknown liveness driver 'carrier-pigeon'"),
        ("[database]\nconnection = not a url\n", "[database] connection:"),
    ],
)
def test_bad_configuration_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, contents: str, fragment: str
) -> None:
    config = tmp_path / "bad.conf"
    if "connection" not in contents:
        contents += f"[database]\nconnection = sqlite:///{tmp_path / 'x.sqlite'}\n"
    config.write_text(contents)
    migrate(f"sqlite:///{tmp_path / 'x.sqlite'}")
    code, out, err = run(capsys, "--config-file", str(config), "service", "list")
    assert code == cli.EXIT_FAILURE
    assert out == ""
    assert_one_line_error(err, fragment)


def test_missing_config_file_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.conf"
    code, _, err = run(capsys, "--config-file", str(missing), "service", "list")
    assert code == cli.EXIT_FAILURE
    assert_one_line_error(err, str(missing))


# -- service list / show -------------------------------------------------------------


def test_service_list_table_is_aligned(capsys: pytest.CaptureFixture[str], fleet: Fleet) -> None:
    code, out, _ = run(capsys, *cfg_args(fleet), "service", "list")
    assert code == 0
    header, *rows = out.splitlines()
    titles = [title for title, _ in cli.TABLE_COLUMNS]
    assert header.split() == titles
    assert len(rows) == 4
    # Every column starts at the same offset in every row.
    starts = [header.index(title) for title in titles]
    for row in rows:
        for start in starts[1:]:
            assert row[start - 2 : start] == "  " and row[start] != " ", row

    by_id = {row.split()[0]: row.split() for row in rows}
    up = by_id[fleet.ids["host-a/nova-compute"]]
    assert up[1:8] == ["host-a", "nova-compute", "compute", "az1", "3", "up", "no"]
    assert up[8] == "no"
    assert up[9].endswith("Z")
    never = by_id[fleet.ids["host-b/nova-compute"]]
    assert never[6:] == ["down", "no", "no", "-"]
    forced = by_id[fleet.ids["host-c/nova-compute"]]
    assert forced[6:9] == ["down", "yes", "yes"]
    scheduler = by_id[fleet.ids["host-a/nova-scheduler"]]
    assert scheduler[4] == "-"  # no availability zone


def test_service_list_json_is_the_api_shape(
    capsys: pytest.CaptureFixture[str], fleet: Fleet
) -> None:
    code, out, _ = run(capsys, *cfg_args(fleet), "service", "list", "--format", "json")
    assert code == 0
    expected = [s.as_dict() for s in fleet.group.get_all()]
    assert json.loads(out) == {"services": expected}


A, B, C = "host-a/nova-compute", "host-b/nova-compute", "host-c/nova-compute"
S = "host-a/nova-scheduler"


@pytest.mark.parametrize(
    "filters, expected",
    [
        (["--binary", "nova-compute"], {A, B, C}),
        (["--host", "host-a"], {A, S}),
        (["--state", "up"], {A, S}),
        (["--state", "down", "--binary", "nova-compute"], {B, C}),
        (["--state", "unknown"], set()),
        (["--az", "az1"], {A, C}),
        (["--topic", "scheduler"], {S}),
        (["--binary", "nova-conductor"], set()),
    ],
)
def test_service_list_filters(
    capsys: pytest.CaptureFixture[str], fleet: Fleet, filters: list[str], expected: set[str]
) -> None:
    code, out, _ = run(capsys, *cfg_args(fleet), "service", "list", "--format", "json", *filters)
    assert code == 0
    names = {f"{s['host']}/{s['binary']}" for s in json.loads(out)["services"]}
    assert names == expected


def test_service_list_on_empty_database_prints_only_the_header(
    capsys: pytest.CaptureFixture[str], config: Path, db_url: str
) -> None:
    migrate(db_url)
    code, out, _ = run(capsys, "--config-file", str(config), "service", "list")
    assert code == 0
    assert out.split() == [title for title, _ in cli.TABLE_COLUMNS]


def test_service_list_invalid_filter_is_exit_2(
    capsys: pytest.CaptureFixture[str], fleet: Fleet
) -> None:
    code, out, err = run(capsys, *cfg_args(fleet), "service", "list", "--host", "")
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert err.strip() == "servicegroup: error: host: must not be empty"


def test_service_show_key_value_and_json(capsys: pytest.CaptureFixture[str], fleet: Fleet) -> None:
    sid = fleet.ids["host-c/nova-compute"]
    expected = fleet.group.get(sid).as_dict()

    code, out, _ = run(capsys, *cfg_args(fleet), "service", "show", sid, "--format", "json")
    assert code == 0
    assert json.loads(out) == expected

    code, out, _ = run(capsys, *cfg_args(fleet), "service", "show", sid)
    assert code == 0
    lines = out.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == list(expected)
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert fields["id"] == sid
    assert fields["disabled_reason"] == "disk failed"
    assert fields["forced_down"] == "yes"
    assert fields["last_heartbeat"] == "-"
    # Values line up in one column.
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}
    assert len(value_columns) == 1


@pytest.mark.parametrize("action", ["show", "enable", "disable", "force-down", "delete"])
def test_bad_id_is_exit_2_and_unknown_id_is_exit_1(
    capsys: pytest.CaptureFixture[str], fleet: Fleet, action: str
) -> None:
    code, _, err = run(capsys, *cfg_args(fleet), "service", action, "not-a-uuid")
    assert code == cli.EXIT_USAGE
    assert_one_line_error(err, "id: must be a UUID")

    missing = "00000000-0000-4000-8000-000000000000"
    code, _, err = run(capsys, *cfg_args(fleet), "service", action, missing)
    assert code == cli.EXIT_FAILURE
    assert_one_line_error(err, missing, "not found")


# -- service changes ------------------------------------------------------------------


def test_disable_with_reason_then_enable(capsys: pytest.CaptureFixture[str], fleet: Fleet) -> None:
    sid = fleet.ids["host-b/nova-compute"]
    code, out, _ = run(
        capsys, *cfg_args(fleet), "service", "disable", sid, "--reason", "kernel upgrade"
    )
    assert code == 0
    assert out.strip() == f"disabled nova-compute on host-b ({sid})"
    svc = fleet.group.get(sid).service
    assert (svc.disabled, svc.disabled_reason) == (True, "kernel upgrade")

    code, out, _ = run(capsys, *cfg_args(fleet), "service", "enable", sid)
    assert code == 0
    assert out.strip() == f"enabled nova-compute on host-b ({sid})"
    svc = fleet.group.get(sid).service
    assert (svc.disabled, svc.disabled_reason) == (False, None)


def test_disable_with_too_long_reason_is_exit_2(
    capsys: pytest.CaptureFixture[str], fleet: Fleet
) -> None:
    sid = fleet.ids["host-b/nova-compute"]
    code, _, err = run(capsys, *cfg_args(fleet), "service", "disable", sid, "--reason", "x" * 300)
    assert code == cli.EXIT_USAGE
    assert_one_line_error(err, "disabled_reason")
    assert fleet.group.get(sid).service.disabled is False


def test_force_down_and_unset(capsys: pytest.CaptureFixture[str], fleet: Fleet) -> None:
    sid = fleet.ids["host-a/nova-compute"]
    assert fleet.group.is_up(sid)

    code, out, _ = run(capsys, *cfg_args(fleet), "service", "force-down", sid)
    assert code == 0
    assert out.strip() == f"forced down nova-compute on host-a ({sid})"
    assert not fleet.group.is_up(sid)
    assert fleet.group.get(sid).service.forced_down

    code, out, _ = run(capsys, *cfg_args(fleet), "service", "force-down", sid, "--unset")
    assert code == 0
    assert out.strip() == f"cleared forced_down of nova-compute on host-a ({sid})"
    assert fleet.group.is_up(sid)


def test_delete_removes_the_service(capsys: pytest.CaptureFixture[str], fleet: Fleet) -> None:
    sid = fleet.ids["host-b/nova-compute"]
    code, out, _ = run(capsys, *cfg_args(fleet), "service", "delete", sid)
    assert code == 0
    assert out.strip() == f"deleted nova-compute on host-b ({sid})"
    assert sid not in {s.service.uuid for s in fleet.group.get_all()}

    code, _, err = run(capsys, *cfg_args(fleet), "service", "delete", sid)
    assert code == cli.EXIT_FAILURE
    assert_one_line_error(err, "not found")


# -- version ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["min", "nova-compute"], "3"),  # host-c (version 1) is forced down
        (["max", "nova-compute"], "5"),
        (["min", "nova-compute", "--up-only"], "3"),
        (["max", "nova-compute", "--up-only"], "3"),  # host-b (5) never beat
        (["max", "nova-scheduler"], "7"),
        (["min", "nova-conductor"], "none"),
        (["max", "nova-conductor", "--up-only"], "none"),
    ],
)
def test_version(
    capsys: pytest.CaptureFixture[str], fleet: Fleet, argv: list[str], expected: str
) -> None:
    code, out, _ = run(capsys, *cfg_args(fleet), "version", *argv)
    assert code == 0
    assert out == f"{expected}\n"


def test_version_empty_binary_is_exit_2(capsys: pytest.CaptureFixture[str], fleet: Fleet) -> None:
    code, _, err = run(capsys, *cfg_args(fleet), "version", "max", "")
    assert code == cli.EXIT_USAGE
    assert_one_line_error(err, "binary: must not be empty")


# -- unexpected failures ---------------------------------------------------------------


def test_internal_error_is_one_line_and_traceback_only_with_debug(
    capsys: pytest.CaptureFixture[str], fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the flux capacitor\nis leaking")

    monkeypatch.setattr(ServiceGroup, "get_all", boom)
    code, out, err = run(capsys, *cfg_args(fleet), "service", "list")
    assert code == cli.EXIT_FAILURE
    assert out == ""
    assert_one_line_error(err, "internal error: RuntimeError: the flux capacitor is leaking")

    code, _, err = run(capsys, *cfg_args(fleet), "--debug", "service", "list")
    assert code == cli.EXIT_FAILURE
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("servicegroup: error: internal error:")


# -- the systemd unit ------------------------------------------------------------------


def test_systemd_unit_runs_a_command_the_cli_accepts() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "etc" / "servicegroup.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(argv[0]).name == "servicegroup"
    assert argv[1:] == ["serve", "--config-file", "/etc/servicegroup/servicegroup.conf"]
    args = cli.build_parser().parse_args(argv[1:])
    assert args.func is cli.cmd_serve
    assert args.late_config_file == ["/etc/servicegroup/servicegroup.conf"]


def test_events_lists_the_stream_as_table_and_json(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "events", *cfg_args(fleet))
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 6  # four registrations, forced down, disabled
    assert "host-c" in lines[4] and "down -> down  forced_down" in lines[4]
    code, out, _ = run(
        capsys, "events", *cfg_args(fleet), "--since", "4", "--host", "host-c", "--format", "json"
    )
    body = json.loads(out)
    assert [e["cause"] for e in body["events"]] == ["forced_down", "disabled"]
    assert body["cursor"] == 6
    code, _, err = run(capsys, "events", *cfg_args(fleet), "--since", "-1")
    assert code == 2
    assert_one_line_error(err, "since")


def test_agent_tls_options_without_a_daemon_url_are_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "sg.conf", f"sqlite:///{tmp_path / 'sg.sqlite'}")
    for option, value in (
        ("--ca-file", "x.pem"),
        ("--client-cert", "x.pem"),
        ("--client-key", "x.pem"),
        ("--auth-strategy", "keystone"),
    ):
        code, _, err = run(
            capsys, "--config-file", str(config), "agent", "--host", "h", "--binary", "b",
            "--check", "true", option, value,
        )  # fmt: skip
        assert code == 2
        assert_one_line_error(err, f"{option.removeprefix('--')}: only applies with --daemon-url")


def test_agent_unreadable_ca_file_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    code, _, err = run(
        capsys, "agent", "--daemon-url", "https://127.0.0.1:1", "--ca-file", str(missing),
        "--host", "h", "--binary", "b", "--check", "true",
    )  # fmt: skip
    assert code == 1
    assert_one_line_error(err, f"CA file: cannot read {missing}")


def test_service_list_and_show_judge_with_their_own_down_time(
    capsys: pytest.CaptureFixture[str], fleet: Fleet
) -> None:
    beaten = fleet.ids[A]
    quick = ["--down-time", "0.000001", "--format", "json"]  # older than 1 us by now
    code, out, _ = run(
        capsys, *cfg_args(fleet), "service", "list", "--binary", "nova-compute", *quick
    )
    assert code == 0
    assert {s["state"] for s in json.loads(out)["services"]} == {"down"}
    code, out, _ = run(capsys, *cfg_args(fleet), "service", "show", beaten, *quick)
    assert code == 0 and json.loads(out)["state"] == "down"
    code, out, _ = run(capsys, *cfg_args(fleet), "service", "show", beaten, "--format", "json")
    assert json.loads(out)["state"] == "up"  # its binary's own: 60 s
    code, _, err = run(capsys, *cfg_args(fleet), "service", "list", "--down-time", "0")
    assert code == cli.EXIT_USAGE
    assert_one_line_error(err, "down_time: must be greater than 0")
