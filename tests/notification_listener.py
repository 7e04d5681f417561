"""The cloud's side of the bus: an oslo.messaging notification listener that keeps what it hears.

Usage::

    with listening(config_file, rabbitmq_server.url, topic) as heard:
        ...                       # the daemon or the group sends
        heard.event_ids()         # the event ids heard, in order

One worker thread, so each notification is handled, and acknowledged, in
the order it arrived: "heard in order" and "acknowledged before its repeat
arrived" (oslo.messaging's duplicate check) then do not depend on timing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import oslo_messaging
from oslo_config import cfg

DATA = "servicegroup_object.data"


class Collector:
    """An oslo.messaging notification endpoint that keeps what it hears, in order."""

    def __init__(self) -> None:
        self.heard: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def info(
        self,
        ctxt: dict[str, Any],
        publisher_id: str,
        event_type: str,
        payload: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        with self._lock:
            self.heard.append(
                {"publisher_id": publisher_id, "event_type": event_type, "payload": payload}
            )

    def event_ids(self) -> list[int]:
        with self._lock:
            return [note["payload"][DATA]["event_id"] for note in self.heard]

    def about(self, host: str) -> list[tuple[str, str | None]]:
        """(event_type, state) of each notification about `host`, in order."""
        with self._lock:
            return [
                (note["event_type"], note["payload"][DATA]["state"])
                for note in self.heard
                if note["payload"][DATA]["host"] == host
            ]


@contextlib.contextmanager
def listening(config_file: str, url: str, topic: str) -> Iterator[Collector]:
    """A started listener on TOPIC.info, with the transport options of `config_file`."""
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[config_file])
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    collector = Collector()
    server = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [collector], executor="threading"
    )
    server.start(override_pool_size=1)
    try:
        yield collector
    finally:
        server.stop()
        server.wait()
        transport.cleanup()
