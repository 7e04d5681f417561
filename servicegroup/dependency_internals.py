"""Every use of a dependency's private API, in one place.

Each buys something the public API cannot, measured (the figures are in each
function's docstring), and each is pinned twice: tests/unit/
test_dependency_internals.py fails with a message naming the dependency and
the use when a release changes what it relies on, and setup.cfg caps each of
these dependencies below its next major version. Nothing else in servicegroup
touches a private attribute of kazoo, tooz, SQLAlchemy, psycopg, PyMySQL or
oslo.messaging.

Uses that bought nothing measurable were removed rather than moved here
(doc/benchmarks.md, "Restructure (issue 17)"): SQLAlchemy's
Compiled._bind_processors (the public TypeEngine.bind_processor gives the
same), and attributes stashed in Engine.__dict__ (the objects that need
per-engine state now own it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# -- kazoo -----------------------------------------------------------------------


def kazoo_send(client: Any, request: Any, result: Any) -> None:
    """Queue a request object of our own on a KazooClient's connection, as kazoo's own are.

    kazoo has no API for ZooKeeper 3.6's multiRead (many getData ops in one
    request); drivers/zookeeper.py's MultiRead is a request record like
    kazoo's own, and KazooClient._call(request, async_result) is how
    kazoo's Transaction is sent: it rides the session, auth and reconnects.
    Measured (issue 17, get_all at 10,000 services, alternated): 2,930 ms
    with kazoo's public pipelined get_async calls, during which a beat on
    the same session waited its turn; 75 ms as multiReads (x39 at the
    minimum, x22.6 at the median).
    """
    client._call(request, result)


# -- oslo.messaging --------------------------------------------------------------


def oslo_messaging_notify(
    transport: Any, target: Any, message: dict[str, Any], unique_id: str
) -> None:
    """Send one notification (message format 2.0) carrying our `_unique_id`, raising if it fails.

    Two things oslo.messaging's public API cannot do:

    - Raise. Its Notifier, and the messagingv2 driver under it, log and
      swallow a failed send (a notification is best effort to them), so a
      caller cannot tell whether to send again. The notifier must, so that
      an outage loses nothing (leader/notifier.py).
    - Repeat an AMQP message's identity. AMQPDriverBase._send stamps every
      message with a fresh `_unique_id` (amqp._add_unique_id, a uuid4), and
      oslo.messaging's notification listeners drop a message whose
      `_unique_id` is among the last ones they acknowledged
      (amqp._MsgIdCache). A send whose confirm was lost, sent again, is then
      dropped by those listeners only if it carries the same `_unique_id`.

    So this is AMQPDriverBase._send's notify path, line for line, with our
    id: the context packed into the message (ours is empty), the 2.0
    envelope, a pooled send connection, notify_send to the target's exchange
    and topic, with the publisher confirms the rabbit driver always asks
    for. retry=0: one attempt, so a bus outage is told at once and the
    notifier's own back-off paces the attempts, rather than kombu
    reconnecting for ever. A transport that is not AMQP (kafka) has no such
    id to keep: it gets Transport._send_notification, which raises too.

    The notifier also relies on how many ids a listener remembers
    (_MsgIdCache.DUP_MSG_CHECK_SIZE, 16): leader/notifier.py CURSOR_EVERY
    holds the same number, and tests/unit/test_dependency_internals.py pins
    the two together.
    """
    from oslo_messaging._drivers import amqp, amqpdriver
    from oslo_messaging._drivers import common as rpc_common

    driver = transport._driver
    msg = dict(message)  # the driver's path adds keys to what it sends
    if not isinstance(driver, amqpdriver.AMQPDriverBase):
        transport._send_notification(target, {}, msg, version=2.0, retry=0)
        return
    msg[amqp.UNIQUE_ID] = unique_id
    amqp.pack_context(msg, {})
    envelope = rpc_common.serialize_msg(msg)
    with driver._get_connection(rpc_common.PURPOSE_SEND, retry=0) as conn:
        conn.notify_send(driver._get_exchange(target), target.topic, envelope, retry=0)


# -- tooz ------------------------------------------------------------------------


def tooz_redis_share_client(coord: Any, shared: Callable[[Callable[..., Any]], Any]) -> bool:
    """Make a tooz RedisDriver build its client with `shared(tooz_factory)`; False if it cannot.

    tooz's RedisDriver._make_client is where tooz builds the redis-py client
    from the URL (every option, sentinel included); wrapping it lets all of
    one driver's coordinators take one client. Measured with redis-py 8.1 /
    tooz 9.1 (500 coordinators, issue 17): 25.4 MB of RSS with their own
    clients, 3.8 MB sharing one and keeping no INFO reply
    (tooz_redis_trim_info), and 500 idle Redis connections fewer; a beat's
    time is the same either way.
    """
    try:
        from tooz.drivers.redis import RedisDriver
    except ImportError:  # redis is optional
        return False
    factory = getattr(coord, "_make_client", None)
    if not isinstance(coord, RedisDriver) or factory is None:
        return False

    def make_client(*args: Any, **kwargs: Any) -> Any:
        return shared(lambda: factory(*args, **kwargs))

    coord._make_client = make_client  # type: ignore[method-assign]  # the private hook itself
    return True


def tooz_redis_trim_info(coord: Any) -> None:
    """After start(): keep only the part of tooz's RedisDriver._server_info that tooz reads.

    tooz keeps the whole parsed INFO reply of each start (~23 KB a
    coordinator) although it reads redis_version alone, once, in start().
    """
    info = getattr(coord, "_server_info", None)
    if isinstance(info, dict) and "redis_version" in info and len(info) > 1:
        coord._server_info = {"redis_version": info["redis_version"]}


def tooz_kazoo_client(coord: Any) -> Any:
    """The KazooClient behind a tooz zookeeper coordinator (KazooDriver._coord), else None.

    Not a speed trick: tooz's zookeeper heartbeat() is a kazoo get() with no
    timeout, which waits for as long as ZooKeeper is unreachable. With the
    client, a beat first asks kazoo whether it is connected (an attribute
    read, no I/O) and fails at once when it is not; and stop() can close a
    disconnected client first, so tooz's group leaves fail at once instead
    of waiting without a timeout.
    """
    from tooz.drivers.zookeeper import KazooDriver

    return coord._coord if isinstance(coord, KazooDriver) else None


# -- psycopg ---------------------------------------------------------------------


def psycopg_bounded_connection(query_timeout: float) -> type[Any]:
    """A psycopg Connection class whose every wait for the server ends after query_timeout.

    Not a speed trick: libpq has no deadline for answers, so a PostgreSQL
    that stops answering (frozen, or behind a link that drops packets while
    the kernel still acknowledges) hangs every heartbeat, sweep and request
    for ever; statement_timeout needs a live server, keepalives a dead link.
    psycopg routes every server wait through Connection.wait(gen, interval,
    timeout), an undocumented method this class overrides, and raises an
    OperationalError when the timeout passes (its own private subclass,
    _WaitTimeout, which is not named here: catching the public base class
    behaves the same, measured). Measured behind a black-holing proxy with
    query_timeout 2 s: a statement ends after 2.00 s, a checkout after
    7.00 s (ping, then connect_timeout); without this class both were still
    waiting after 20 s (tests/functional/test_faults_blackhole.py proves the
    bound). The connection is mid-statement then, or broken by whatever
    else failed the wait, so it is closed: SQLAlchemy sees a disconnect
    and drops it.
    """
    import psycopg

    class BoundedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, interval: Any = None, timeout: float | None = None) -> Any:
            limit = query_timeout if timeout is None else timeout
            kwargs: dict[str, Any] = {"timeout": limit}
            if interval is not None:
                kwargs["interval"] = interval
            started = time.monotonic()
            try:
                return super().wait(gen, **kwargs)
            except psycopg.OperationalError as exc:
                self.close()
                if time.monotonic() - started < limit:
                    raise  # the connection failed: its own words say more
                raise psycopg.OperationalError(
                    f"no answer from the database within {limit:g}s"
                ) from exc

    return BoundedConnection
