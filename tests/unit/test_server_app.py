"""servicegroup serve's own set-up (server/app.py serve), without a server."""

from __future__ import annotations

import pytest

from servicegroup import conf as sg_conf
from servicegroup.server import app


def test_serve_makes_heartbeat_nodes_unless_configured(monkeypatch) -> None:
    seen: list[str | None] = []

    class Stop(Exception):
        pass

    def capture(conf):
        seen.append(conf.zookeeper.node_lifetime)
        raise Stop

    monkeypatch.setattr(app, "ServiceGroup", capture)
    for given, expected in ((None, "heartbeat"), ("session", "session")):
        options = {"zookeeper__node_lifetime": given} if given else {}
        with pytest.raises(Stop):
            app.serve(sg_conf.make_conf(config_files=[], **options))
        assert seen[-1] == expected
