"""binary_times.py: [binaries] parsed into each binary's down time and report interval."""

from __future__ import annotations

import pytest

from servicegroup import conf as sg_conf
from servicegroup.binary_times import BinaryTimes
from servicegroup.exceptions import ConfigError


def times(**overrides: object) -> BinaryTimes:
    return BinaryTimes.from_conf(sg_conf.make_conf(**overrides))


def test_unnamed_binaries_keep_the_global_times() -> None:
    got = times(service_down_time=60.0, report_interval=10.0)
    assert got.down_time("nova-compute") == 60.0
    assert got.report_interval("nova-compute") == 10.0
    assert got.longest == got.shortest == 60.0


def test_a_binary_gets_its_own_times_from_a_config_file(tmp_path) -> None:
    path = tmp_path / "servicegroup.conf"
    path.write_text(
        "[DEFAULT]\nservice_down_time = 60\nreport_interval = 10\n"
        "[binaries]\nservice_down_time = nova-conductor:20.5, nova-compute:120\n"
        "report_interval = nova-conductor:5\n"
    )
    got = BinaryTimes.from_conf(sg_conf.make_conf(config_files=[str(path)]))
    assert got.down_time("nova-conductor") == 20.5
    assert got.report_interval("nova-conductor") == 5.0
    assert got.down_time("nova-compute") == 120.0
    assert got.report_interval("nova-compute") == 10.0  # the global one
    assert got.down_time("nova-scheduler") == 60.0
    assert (got.shortest, got.longest) == (20.5, 120.0)


def test_the_global_down_time_is_the_corrected_one() -> None:
    # The global pair keeps nova's correction (2.5 x report_interval) and its warning.
    assert times(service_down_time=10.0, report_interval=10.0).down_time("x") == 25.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"binaries__service_down_time": {"nova-compute": "abc"}},
            "[binaries] service_down_time nova-compute:abc: must be a number of seconds",
        ),
        (
            {"binaries__service_down_time": {"nova-compute": "0"}},
            "[binaries] service_down_time nova-compute:0: must be a positive number of seconds",
        ),
        (
            {"binaries__report_interval": {"nova-compute": "nan"}},
            "[binaries] report_interval nova-compute:nan: must be a positive number of seconds",
        ),
        (
            {"binaries__service_down_time": {"nova-compute": "-3"}},
            "must be a positive number of seconds",
        ),
        (
            {"binaries__service_down_time": {" nova": "30"}},
            "binary: must not have leading or trailing whitespace",
        ),
        (
            {"binaries__service_down_time": {"nova-compute": "15"}},
            "[binaries] service_down_time nova-compute (15s) must be greater than 2 x "
            "[DEFAULT] report_interval (10s) for binary 'nova-compute'",
        ),
        (
            {"binaries__report_interval": {"nova-compute": "30"}},
            "[DEFAULT] service_down_time (60s) must be greater than 2 x "
            "[binaries] report_interval nova-compute (30s)",
        ),
    ],
)
def test_a_bad_entry_is_a_config_error_naming_the_option_and_the_rule(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        times(service_down_time=60.0, report_interval=10.0, **overrides)
    assert message in str(info.value)


def test_a_binary_may_be_quicker_than_the_global_pair_allows() -> None:
    got = times(
        service_down_time=60.0,
        report_interval=10.0,
        binaries__service_down_time={"nova-conductor": "2.5"},
        binaries__report_interval={"nova-conductor": "1"},
    )
    assert got.down_time("nova-conductor") == 2.5
    assert got.report_interval("nova-conductor") == 1.0
