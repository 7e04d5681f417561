"""drivers/memcached.py: a beat's key outlives the longest down time that can count it."""

from __future__ import annotations

from servicegroup import conf as sg_conf
from servicegroup.drivers.memcached import _ttl, bound_down_time


def test_the_key_ttl_covers_the_longest_binary_down_time() -> None:
    plain = sg_conf.make_conf(service_down_time=60.0, report_interval=10.0)
    assert (bound_down_time(plain), _ttl(plain)) == (60.0, 61)
    longer = sg_conf.make_conf(
        service_down_time=60.0,
        report_interval=10.0,
        binaries__service_down_time={"nova-compute": "120.5", "nova-conductor": "25"},
    )
    assert (bound_down_time(longer), _ttl(longer)) == (120.5, 122)
