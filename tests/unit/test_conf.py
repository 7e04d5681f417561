"""Option handling: nova's down-time correction, overrides, and driver lookup."""

from __future__ import annotations

import logging

import pytest

from servicegroup import conf as sg_conf
from servicegroup import drivers
from servicegroup.drivers.db import DbDriver
from servicegroup.exceptions import ConfigError


def make(**overrides) -> sg_conf.cfg.ConfigOpts:
    # config_files=[]: never pick up a developer's ~/.servicegroup or /etc file.
    return sg_conf.make_conf(config_files=[], **overrides)


def test_defaults() -> None:
    conf = make()
    assert conf.driver == "db"
    assert conf.report_interval == 10.0
    assert conf.service_down_time == 60.0
    assert conf.api.host == "127.0.0.1"
    assert conf.api.port == sg_conf.DEFAULT_PORT == 8797
    assert conf.database.connection is None


def test_overrides_reach_their_groups() -> None:
    conf = make(report_interval=0.05, database__connection="sqlite://", zookeeper__root="/sg")
    assert conf.report_interval == 0.05
    assert conf.database.connection == "sqlite://"
    assert conf.zookeeper.root == "/sg"


def test_config_file(tmp_path) -> None:
    path = tmp_path / "servicegroup.conf"
    path.write_text("[DEFAULT]\nreport_interval = 2.5\n[database]\nconnection = sqlite:///x\n")
    conf = sg_conf.make_conf(config_files=[str(path)])
    assert conf.report_interval == 2.5
    assert conf.database.connection == "sqlite:///x"


def test_down_time_kept_when_above_twice_the_interval(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="servicegroup.conf")
    conf = make(report_interval=10.0, service_down_time=20.001)
    assert sg_conf.effective_down_time(conf) == 20.001
    assert caplog.records == []


@pytest.mark.parametrize(
    ("interval", "down"),
    [(10.0, 20.0), (10.0, 15.0), (10.0, 10.0), (10.0, 1.0), (0.05, 0.1)],
    ids=["exactly-2x", "1.5x", "equal", "below", "sub-second"],
)
def test_down_time_raised_to_2_5x_with_one_warning(caplog, interval: float, down: float) -> None:
    caplog.set_level(logging.WARNING, logger="servicegroup.conf")
    conf = make(report_interval=interval, service_down_time=down)
    assert sg_conf.effective_down_time(conf) == pytest.approx(2.5 * interval)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "service_down_time" in message
    assert "2 x report_interval" in message


def test_database_url_defaults_to_sqlite_in_state_dir(tmp_path) -> None:
    state = tmp_path / "state" / "nested"
    url = sg_conf.database_url(make(state_dir=str(state)))
    assert url == f"sqlite:///{state / 'servicegroup.sqlite'}"
    assert state.is_dir()  # created on first use, so `make run` needs no set-up
    assert sg_conf.database_url(make(database__connection="sqlite://")) == "sqlite://"


def test_list_opts_covers_every_group() -> None:
    groups = dict(sg_conf.list_opts())
    assert set(groups) == {
        "DEFAULT", "database", "api", "zookeeper", "memcached", "tooz", "events", "claims",
        "binaries",
        "keystone_authtoken",
        "notifications",
    }  # fmt: skip
    names = {opt.name for opt in groups["DEFAULT"]}
    assert {"driver", "report_interval", "service_down_time"} <= names


def test_load_db_driver() -> None:
    assert drivers.load("db") is DbDriver
    assert "db" in drivers.installed()


def test_load_unknown_driver_lists_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        drivers.load("nope")
    message = str(info.value)
    assert "'nope'" in message
    installed = drivers.installed()
    assert installed  # at least db: otherwise the message would list nothing useful
    for name in installed:
        assert name in message
