"""server/service_series.py: label text and lines equal to what generate_latest writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from servicegroup.server.prom_text import label_text
from servicegroup.server.service_series import (
    ServiceSeries,
    info_labels,
    label_texts,
    short_labels,
)
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
    text = label_texts(fleet)
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


def test_label_texts_are_the_label_dicts_written_out() -> None:
    """The f-strings and the dicts Samples are built from say the same, escapes included."""
    fleet = statuses()
    assert label_texts(fleet) == [
        (label_text(short_labels(s.service)), label_text(info_labels(s.service))) for s in fleet
    ]
