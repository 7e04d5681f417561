"""The private APIs servicegroup/dependency_internals.py relies on, pinned.

Each test fails with a message naming the dependency, its installed version
and the use, so that a release that changes one is caught here, before a
heartbeat breaks. The behaviour each use buys is proven by the functional
tests named in each message, against real servers.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import psycopg
import pytest
from kazoo.client import KazooClient, TransactionRequest
from tooz import coordination
from tooz.drivers.redis import RedisDriver
from tooz.drivers.zookeeper import KazooDriver

from servicegroup import dependency_internals


def changed(package: str, what: str, used_by: str) -> str:
    return (
        f"{package} {version(package)} changed {what}, which "
        f"servicegroup/dependency_internals.py relies on for {used_by}; adapt it there "
        f"(or cap {package} below this release in setup.cfg)"
    )


def test_kazoo_sends_request_objects_through_call() -> None:
    call = getattr(KazooClient, "_call", None)
    params = list(inspect.signature(call).parameters) if call else []
    assert params == ["self", "request", "async_object"], changed(
        "kazoo", "KazooClient._call(request, async_object)", "the zookeeper driver's multiRead"
    )
    assert "_call(" in inspect.getsource(TransactionRequest), changed(
        "kazoo", "how a Transaction is sent (no longer KazooClient._call)", "multiRead"
    )


def test_kazoo_send_queues_on_the_client() -> None:
    sent = []

    class Client:
        def _call(self, request: object, result: object) -> None:
            sent.append((request, result))

    dependency_internals.kazoo_send(Client(), "request", "result")
    assert sent == [("request", "result")]


def test_tooz_redis_builds_its_client_in_make_client_and_keeps_server_info() -> None:
    source = inspect.getsource(RedisDriver)
    assert callable(getattr(RedisDriver, "_make_client", None)), changed(
        "tooz", "RedisDriver._make_client", "one shared redis client per driver"
    )
    assert "self._client = self._make_client(" in source, changed(
        "tooz", "where RedisDriver.start() builds its client", "one shared redis client"
    )
    assert "self._server_info = self._client.info()" in source, changed(
        "tooz", "RedisDriver._server_info", "trimming the INFO reply each coordinator keeps"
    )


def test_tooz_redis_share_client_wraps_the_factory() -> None:
    coord = coordination.get_coordinator("redis://127.0.0.1:1", b"member")
    built: list[str] = []

    def shared(build):  # type: ignore[no-untyped-def]
        built.append("shared")
        return "the client"

    assert dependency_internals.tooz_redis_share_client(coord, shared)
    assert coord._make_client() == "the client" and built == ["shared"]
    assert not dependency_internals.tooz_redis_share_client(object(), shared)


def test_tooz_redis_trim_info_keeps_the_version_only() -> None:
    coord = coordination.get_coordinator("redis://127.0.0.1:1", b"member")
    coord._server_info = {"redis_version": "7.0.15", "used_memory": 1}
    dependency_internals.tooz_redis_trim_info(coord)
    assert coord._server_info == {"redis_version": "7.0.15"}


def test_tooz_kazoo_driver_keeps_its_client_in_coord() -> None:
    coord = coordination.get_coordinator("kazoo://127.0.0.1:1", b"member")
    assert isinstance(coord, KazooDriver)
    assert isinstance(dependency_internals.tooz_kazoo_client(coord), KazooClient), changed(
        "tooz", "KazooDriver._coord", "failing a beat at once while ZooKeeper is unreachable"
    )
    redis = coordination.get_coordinator("redis://127.0.0.1:1", b"member")
    assert dependency_internals.tooz_kazoo_client(redis) is None


def test_psycopg_waits_go_through_connection_wait_with_a_timeout() -> None:
    # That a timed-out wait raises an OperationalError is proven against a
    # black-holed server: tests/functional/test_faults_blackhole.py.
    params = inspect.signature(psycopg.Connection.wait).parameters
    assert list(params)[:4] == ["self", "gen", "interval", "timeout"], changed(
        "psycopg", "Connection.wait(gen, interval, timeout)", "query_timeout on PostgreSQL"
    )


def test_psycopg_bounded_connection_is_a_connection() -> None:
    bounded = dependency_internals.psycopg_bounded_connection(1.5)
    assert issubclass(bounded, psycopg.Connection)
    with pytest.raises(psycopg.OperationalError):
        bounded.connect("host=127.0.0.1 port=1 connect_timeout=1")


def test_psycopg_bounded_wait_rewords_only_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait that fails before query_timeout keeps its own error; one at the timeout says so."""
    bounded = dependency_internals.psycopg_bounded_connection(0.05)
    conn = bounded.__new__(bounded)  # no server: the parent's wait is replaced below
    closed: list[bool] = []
    monkeypatch.setattr(bounded, "close", lambda self: closed.append(True))

    def broken(self, gen, **kwargs):  # type: ignore[no-untyped-def]
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(psycopg.Connection, "wait", broken)
    with pytest.raises(psycopg.OperationalError, match="closed the connection"):
        conn.wait(iter(()))

    def silent(self, gen, **kwargs):  # type: ignore[no-untyped-def]
        import time

        time.sleep(kwargs["timeout"])
        raise psycopg.OperationalError("timed out")

    monkeypatch.setattr(psycopg.Connection, "wait", silent)
    with pytest.raises(
        psycopg.OperationalError, match=r"no answer from the database within 0\.05s"
    ):
        conn.wait(iter(()))
    assert closed == [True, True]  # closed either way: mid-statement or broken


def test_oslo_messaging_transports_send_notifications_and_raise() -> None:
    from oslo_messaging.transport import Transport

    send = getattr(Transport, "_send_notification", None)
    params = list(inspect.signature(send).parameters) if send else []
    assert params == ["self", "target", "ctxt", "message", "version", "retry"], changed(
        "oslo.messaging",
        "Transport._send_notification(target, ctxt, message, version, retry)",
        "the notifier's sends that raise when the bus refuses them",
    )


def test_oslo_messaging_amqp_sends_notifications_as_notify_builds_them() -> None:
    """dependency_internals.oslo_messaging_notify replays AMQPDriverBase._send's notify path."""
    from oslo_messaging._drivers import amqp, amqpdriver
    from oslo_messaging._drivers import common as rpc_common
    from oslo_messaging._drivers.impl_rabbit import Connection

    source = inspect.getsource(amqpdriver.AMQPDriverBase._send)
    use = "sending notifications with a _unique_id of our own"
    for line in [
        "rpc_amqp._add_unique_id(msg)",
        "rpc_amqp.pack_context(msg, ctxt)",
        "msg = rpc_common.serialize_msg(msg)",
        "self._get_connection(rpc_common.PURPOSE_SEND, retry) as conn",
        "exchange = self._get_exchange(target)",
        "conn.notify_send(exchange, target.topic, msg, retry=retry)",
    ]:
        assert line in source, changed("oslo.messaging", f"AMQPDriverBase._send ({line})", use)
    assert amqp.UNIQUE_ID == "_unique_id", changed("oslo.messaging", "amqp.UNIQUE_ID", use)
    assert callable(rpc_common.serialize_msg) and callable(amqp.pack_context), changed(
        "oslo.messaging", "serialize_msg / pack_context", use
    )
    params = list(inspect.signature(Connection.notify_send).parameters)
    assert params[:5] == ["self", "exchange_name", "topic", "msg", "retry"], changed(
        "oslo.messaging",
        "impl_rabbit.Connection.notify_send(exchange_name, topic, msg, retry)",
        use,
    )


def test_oslo_messaging_listeners_drop_a_unique_id_they_acknowledged() -> None:
    """What the same _unique_id buys, and the window the notifier's cursor is sized to."""
    from oslo_messaging._drivers import amqp, amqpdriver
    from oslo_messaging._drivers.common import DuplicateMessageError

    from servicegroup.leader.notifier import CURSOR_EVERY

    use = "a notification listener dropping a repeat of one event"
    assert amqp._MsgIdCache.DUP_MSG_CHECK_SIZE == CURSOR_EVERY, changed(
        "oslo.messaging",
        f"_MsgIdCache.DUP_MSG_CHECK_SIZE (no longer {CURSOR_EVERY}, the notifier's CURSOR_EVERY)",
        use,
    )
    window = amqp._MsgIdCache()
    window.add("abc")
    with pytest.raises(DuplicateMessageError):
        window.check_duplicate_message({amqp.UNIQUE_ID: "abc"})
    assert "check_duplicate_message(message)" in inspect.getsource(
        amqpdriver.AMQPListener.__call__
    ), changed("oslo.messaging", "AMQPListener.__call__'s duplicate check", use)
    assert "msg_id_cache.add(self.unique_id)" in inspect.getsource(
        amqpdriver.NotificationAMQPIncomingMessage.acknowledge
    ), changed("oslo.messaging", "NotificationAMQPIncomingMessage.acknowledge", use)


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict, int | None]] = []

    def __enter__(self) -> RecordingConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def notify_send(self, exchange_name: str, topic: str, msg: dict, retry: int | None) -> None:
        self.sent.append((exchange_name, topic, msg, retry))


def test_oslo_messaging_notify_sends_our_unique_id_in_a_2_0_envelope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import oslo_messaging
    from oslo_config import cfg
    from oslo_messaging._drivers import common as rpc_common

    transport = oslo_messaging.get_notification_transport(
        cfg.ConfigOpts(), url="rabbit://guest:guest@127.0.0.1:1/"
    )
    conn = RecordingConnection()
    asked: list[tuple] = []

    def get_connection(purpose: str, retry: int | None = None) -> RecordingConnection:
        asked.append((purpose, retry))
        return conn

    monkeypatch.setattr(transport._driver, "_get_connection", get_connection)
    message = {"message_id": "m-1", "event_type": "servicegroup.service.update"}
    target = oslo_messaging.Target(topic="notifications.info")
    dependency_internals.oslo_messaging_notify(transport, target, message, "ab12")
    assert asked == [(rpc_common.PURPOSE_SEND, 0)]
    [(exchange, topic, envelope, retry)] = conn.sent
    assert (exchange, topic, retry) == ("openstack", "notifications.info", 0)
    body = rpc_common.deserialize_msg(envelope)
    assert envelope["oslo.version"] == "2.0"
    assert body == {**message, "_unique_id": "ab12"}
    assert message == {"message_id": "m-1", "event_type": "servicegroup.service.update"}
    transport.cleanup()


def test_oslo_messaging_notify_on_a_transport_that_is_not_amqp_still_raises() -> None:
    class Driver:
        pass

    class Transport:
        _driver = Driver()

        def _send_notification(self, target, ctxt, message, version, retry):  # type: ignore[no-untyped-def]
            raise ConnectionError(f"refused {message['message_id']} v{version} retry={retry}")

    with pytest.raises(ConnectionError, match=r"refused m-1 v2\.0 retry=0"):
        dependency_internals.oslo_messaging_notify(
            Transport(), "target", {"message_id": "m-1"}, "x"
        )
