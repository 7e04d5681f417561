"""server/service_series.py: the kept label text, and lines equal to generate_latest's."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from servicegroup.server.service_series import SeriesLabels, ServiceSeries
from servicegroup.service import ServiceStatus, State
from tests.helpers import make_service


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def statuses() -> list[ServiceStatus]:
    beat = datetime(2026, 12, 7, 6, 0, 0, 123456, tzinfo=UTC)
    return [
        ServiceStatus(make_service(host="a", version=61), State.UP, beat),
        ServiceStatus(
            make_service(host='odd "h" \\ é\n', topic="compute", availability_zone="az1"),
            State.DOWN,
            None,
        ),
        ServiceStatus(make_service(host="<img src=x>", version=7), State.UNKNOWN, beat),
    ]


def test_each_family_is_written_as_generate_latest_writes_it() -> None:
    fleet = statuses()
    text = SeriesLabels().of(fleet)
    families: list[Metric] = [
        ServiceSeries(
            "servicegroup_up",
            "Up;\nwith \\ escapes.",
            fleet,
            lambda s: None if s.state is State.UNKNOWN else int(s.is_up),
            text,
        ),
        ServiceSeries("servicegroup_info", "Info.", fleet, lambda s: 1, text, info=True),
        ServiceSeries("servicegroup_version", "V.", fleet, lambda s: s.service.version, text),
        ServiceSeries(
            "servicegroup_beat",
            "T.",
            fleet,
            lambda s: None if s.last_heartbeat is None else s.last_heartbeat.timestamp(),
            text,
        ),
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    written = "".join(family.text() for family in families if isinstance(family, ServiceSeries))
    assert written.encode() == generate_latest(registry)
    assert 'servicegroup_up{binary="nova-compute",host="a"} 1.0\n' in written
    assert "servicegroup_up{" + 'binary="nova-compute",host="<img src=x>"' not in written  # unknown


def test_label_text_is_kept_while_its_source_is_unchanged() -> None:
    labels = SeriesLabels()
    fleet = statuses()
    first = labels.of(fleet)
    # A new Service object with the same labels (a beat bumped report_count): same text object.
    again = [
        dataclasses.replace(s, service=dataclasses.replace(s.service, report_count=9))
        for s in fleet
    ]
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(first, labels.of(again), strict=True))
    # A restart into another zone: new info text, same short text.
    moved = [
        dataclasses.replace(
            fleet[0], service=dataclasses.replace(fleet[0].service, availability_zone="az9")
        )
    ]
    ((short, info),) = labels.of(moved)
    assert short == first[0][0] and 'availability_zone="az9"' in info
    labels.table.keep_only({fleet[0].service.uuid})
    assert set(labels.table.entries) == {fleet[0].service.uuid}
