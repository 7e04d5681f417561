"""Each binary's service_down_time and report_interval: `[binaries]` over the globals.

A conductor and a compute host do not deserve the same patience (issue 21):
an operator gives a binary its own down time, and its own heartbeat period,
in `[binaries]`; every binary not named there keeps `[DEFAULT]`'s. Parsed
once at start-up; a bad entry is a ConfigError naming the option, the
binary and the rule, so a daemon never starts with a time it cannot apply.
Pure: the state rule (state.py) gets the numbers, never this module's rules.

Usage::

    times = BinaryTimes.from_conf(conf)
    times.down_time("nova-compute")        # its own, or the global one
    times.report_interval("nova-compute")
    times.longest                          # what a backend must keep a beat for
    times.of("nova-compute")               # both, as Times: GET /v1/binaries/{binary}/times
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from servicegroup import conf as sg_conf
from servicegroup import validation
from servicegroup.exceptions import ConfigError, InvalidInput


def flaps(down_time: float, report_interval: float) -> bool:
    """Whether one late heartbeat would take a service down: down time <= 2 x interval.

    The rule [binaries] entries are refused by, and the one `servicegroup
    agent` warns by when its --interval is too slow for its binary.
    """
    return down_time <= 2 * report_interval


@dataclass(frozen=True)
class Times:
    """One binary's pair, as a process beating for it must know them."""

    binary: str
    report_interval: float
    service_down_time: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "report_interval": self.report_interval,
            "service_down_time": self.service_down_time,
        }


class BinaryTimes:
    """The down time and report interval of each binary, the globals for the rest."""

    def __init__(
        self,
        down_time: float,
        report_interval: float,
        down_times: Mapping[str, float] | None = None,
        report_intervals: Mapping[str, float] | None = None,
    ) -> None:
        self.default_down_time = down_time
        self.default_report_interval = report_interval
        self.down_times = dict(down_times or {})
        self.report_intervals = dict(report_intervals or {})
        for binary in sorted(set(self.down_times) | set(self.report_intervals)):
            down = self.down_time(binary)
            interval = self.report_interval(binary)
            if flaps(down, interval):
                # Unlike the global pair (nova's, corrected with a warning for
                # compatibility), a binary's own pair is new: a mistake is refused.
                raise ConfigError(
                    f"{_source('service_down_time', binary, self.down_times)} ({down:g}s) "
                    "must be greater than 2 x "
                    f"{_source('report_interval', binary, self.report_intervals)} "
                    f"({interval:g}s) for binary {binary!r}: one late heartbeat would flap "
                    "it down"
                )

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> BinaryTimes:
        return cls(
            sg_conf.effective_down_time(conf),
            conf.report_interval,
            _seconds("service_down_time", conf.binaries.service_down_time),
            _seconds("report_interval", conf.binaries.report_interval),
        )

    def down_time(self, binary: str) -> float:
        return self.down_times.get(binary, self.default_down_time)

    def report_interval(self, binary: str) -> float:
        return self.report_intervals.get(binary, self.default_report_interval)

    def of(self, binary: str) -> Times:
        """Both of `binary`'s times: its own entries, the globals for the rest."""
        return Times(binary, self.report_interval(binary), self.down_time(binary))

    @property
    def longest(self) -> float:
        """The longest down time of any binary: how long a beat can still count."""
        return max([self.default_down_time, *self.down_times.values()])

    @property
    def shortest(self) -> float:
        """The shortest down time of any binary: how soon a death can be due."""
        return min([self.default_down_time, *self.down_times.values()])


def _source(option: str, binary: str, own: Mapping[str, float]) -> str:
    """Where a binary's value comes from, for an error: its [binaries] entry or the global."""
    return f"[binaries] {option} {binary}" if binary in own else f"[DEFAULT] {option}"


def _seconds(option: str, raw: Mapping[str, str] | None) -> dict[str, float]:
    """`[binaries] option`'s BINARY:SECONDS entries, each checked, as floats."""
    found: dict[str, float] = {}
    for binary, text in (raw or {}).items():
        where = f"[binaries] {option} {binary}:{text}"
        try:
            validation.name("binary", binary)
        except InvalidInput as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            seconds = float(text)
        except ValueError:
            raise ConfigError(f"{where}: must be a number of seconds") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"{where}: must be a positive number of seconds")
        found[binary] = seconds
    return found
