"""What the notifier costs the sweeping leader per event, each sender side by side.

    python bench/notifier.py --events 2000 --rounds 3
    python bench/notifier.py --quick          # seconds: 200 events, one round

Why: the notifier (servicegroup/leader/notifier.py) runs in the leader's
process, on a thread of its own, so the sweep never waits for the bus; what
it takes from the leader is CPU (the GIL the sweeper and the API need) and
database round trips. This measures both per event, in process, against a
real RabbitMQ (tests/servers.py RabbitMQServer, durable queues: the setting
doc/operations.md advises) and a scratch PostgreSQL database:

- `none`:        the same events, no notifier: the baseline is zero by construction
                 (nothing else reads the stream for it), listed for the side-by-side;
- `null`:        the notifier with a sender that does nothing: its own work alone
                 (the lease check, the stream read, the payload, the cursor write);
- `log`:         [notifications] driver = log, to a logger that discards;
- `messagingv2`: to RabbitMQ, each send waiting for the broker's publisher confirm.

Each round appends --events events in one registration batch (the sweeper's
own transitions are appended the same way), then drains them with
Notifier.send_pending on this thread, timed: wall (perf_counter) and this
thread's CPU (thread_time), divided by the events sent. The senders are
ALTERNATED round by round; the minimum and median per event are reported.

Then the sweep's side (--fleet services): a Sweeper over that fleet, each of
its sweeps a full read (full_sweep_interval 0.001), --sweeps sweeps back to
back on this thread, once with notifications off and once with messagingv2
while its notifier thread drains a backlog of --events events to RabbitMQ
(appended straight to the stream, as claim events are, so the fleet the
sweeps read is the same; --backlog events, enough to keep it busy through
every sweep counted: a sweep during which it caught up ends the round),
alternated for --rounds rounds: the median sweep's wall and CPU side by
side. What the notifier's thread takes from the sweep is the GIL, nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import uuid as uuid_mod
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import update  # noqa: E402

from servicegroup.api import ServiceGroup  # noqa: E402
from servicegroup.db import event_log, notification_cursor  # noqa: E402
from servicegroup.db.engine import writing  # noqa: E402
from servicegroup.db.models import leases, notification_cursors  # noqa: E402
from servicegroup.leader import lease  # noqa: E402
from servicegroup.leader.notifier import BusSender, LogSender, Notifier, Sender  # noqa: E402
from servicegroup.leader.sweeper import Sweeper  # noqa: E402
from servicegroup.service import Registration  # noqa: E402
from tests.servers import POSTGRESQL_ADMIN, RabbitMQServer, scratch_database  # noqa: E402

SENDERS = ("none", "null", "log", "messagingv2")


class NullSender:
    def send(self, message: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_sender(name: str, sg: ServiceGroup, rabbit: RabbitMQServer) -> Sender:
    if name == "null":
        return NullSender()
    if name == "log":
        logging.getLogger("oslo.messaging.notification").disabled = True
        return LogSender()
    return BusSender(sg.conf, rabbit.url, [f"bench_{uuid_mod.uuid4().hex[:8]}"])


def append_events(sg: ServiceGroup, count: int) -> None:
    """`count` registrations in one batch: `count` events after the cursor."""
    tag = uuid_mod.uuid4().hex[:8]
    sg.register_many(Registration(f"bench-{tag}-{n}", "nova-compute") for n in range(count))


def one_round(
    sender_name: str, sg: ServiceGroup, hold: lease.Hold, rabbit: RabbitMQServer, events: int
) -> dict:
    if sender_name == "none":
        append_events(sg, events)
        return {"sender": "none", "events": events, "wall_us": 0.0, "cpu_us": 0.0}
    sender = make_sender(sender_name, sg, rabbit)
    notifier = Notifier(
        sg.engine,
        sender,
        poll_interval=1.0,
        retry_interval=0.1,
        retry_interval_max=1.0,
        publisher_id="servicegroup:bench",
    )
    notifier.lead(hold)
    while notifier.send_pending(hold):  # seed, and send what earlier rounds left
        pass
    if sender_name == "messagingv2":  # the connection and the queue's declaration, once
        append_events(sg, 1)
        notifier.send_pending(hold)
    append_events(sg, events)
    sent = 0
    wall, cpu = time.perf_counter(), time.thread_time()
    while True:
        done = notifier.send_pending(hold)
        if not done:
            break
        sent += done
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    sender.close()
    assert sent == events, f"{sender_name}: sent {sent} of {events}"
    return {
        "sender": sender_name,
        "events": sent,
        "wall_us": wall / sent * 1e6,
        "cpu_us": cpu / sent * 1e6,
        "retried": notifier.stats.retried,
    }


def stream_backlog(sg: ServiceGroup, count: int) -> None:
    """`count` events on the stream in one transaction, naming no service the sweep reads."""
    drafts = [
        event_log.Draft(str(uuid_mod.uuid4()), "bench", "bench", "up", "up", "claim_bench")
        for _ in range(count)
    ]
    with writing(sg.engine) as conn:
        event_log.append(conn, drafts)


def sweep_round(
    mode: str, url: str, config: str, rabbit: RabbitMQServer, events: int, sweeps: int
) -> dict:
    sg = ServiceGroup.from_options(
        config,
        database__connection=url,
        report_interval=60.0,
        service_down_time=600.0,
        events__full_sweep_interval=0.001,
        notifications__driver=mode,
        notifications__transport_url=rabbit.url,
        notifications__topics=[f"bench_{uuid_mod.uuid4().hex[:8]}"],
    )
    with writing(sg.engine) as conn:  # the last round's leader is gone: no waiting for it
        conn.execute(update(leases).values(expires_at=datetime(2000, 1, 1)))
        # Seeded afresh at the stream's end: only this round's backlog to send.
        conn.execute(notification_cursors.delete())
    sweeper = Sweeper(sg, sg.conf, holder=f"bench-{mode}-{uuid_mod.uuid4().hex[:6]}")
    notifier = sweeper.notifier
    try:
        if notifier is not None:
            notifier.start()
        sweeper.sweep()  # leads; the notifier seeds its cursor
        if notifier is not None:
            while True:
                with sg.engine.connect() as conn:
                    if notification_cursor.read(conn) is not None:
                        break
                time.sleep(0.01)
        stream_backlog(sg, events)
        if notifier is not None:
            notifier.wake()
        walls, cpus = [], []
        for _ in range(sweeps):
            wall, cpu = time.perf_counter(), time.thread_time()
            sweeper.sweep()
            if notifier is not None and notifier.stats.sent >= events:
                break  # caught up during this sweep: it is not a sweep beside a busy notifier
            walls.append(time.perf_counter() - wall)
            cpus.append(time.thread_time() - cpu)
        sent = 0 if notifier is None else notifier.stats.sent
    finally:
        sweeper.stop()
        sg.close()
    return {
        "mode": mode,
        "sweep_wall_ms": statistics.median(walls) * 1e3,
        "sweep_cpu_ms": statistics.median(cpus) * 1e3,
        "sent_during": sent,
        "sweeps": len(walls),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fleet", type=int, default=2000, help="services the sweeps read")
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=20000, help="events behind, per round")
    parser.add_argument("--quick", action="store_true", help="200 events, 1 round")
    parser.add_argument("--json", help="write the rounds here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds, args.fleet, args.sweeps, args.backlog = 200, 1, 500, 5, 2000
    rabbit = RabbitMQServer()
    rabbit.start()
    rows: list[dict] = []
    sweep_rows: list[dict] = []
    try:
        with scratch_database(POSTGRESQL_ADMIN, prefix="sg_bench_notify") as url:
            config = rabbit.workdir / "servicegroup.conf"
            config.write_text("[oslo_messaging_rabbit]\namqp_durable_queues = true\n")
            sg = ServiceGroup.from_options(str(config), database__connection=url)
            epoch = lease.acquire(sg.engine, lease.SWEEPER, "bench", None, 3600.0)
            hold = lease.Hold(lease.SWEEPER, "bench", epoch, 3600.0)
            try:
                for _ in range(args.rounds):
                    for name in SENDERS:
                        rows.append(one_round(name, sg, hold, rabbit, args.events))
                sg.register_many(
                    Registration(f"fleet-{n}", "nova-compute") for n in range(args.fleet)
                )
            finally:
                sg.close()
            for _ in range(args.rounds):
                for mode in ("noop", "messagingv2"):
                    sweep_rows.append(
                        sweep_round(mode, url, str(config), rabbit, args.backlog, args.sweeps)
                    )
    finally:
        rabbit.cleanup()
    print(f"{'sender':<12} {'events':>7} {'wall us/event':>22} {'leader CPU us/event':>24}")
    for name in SENDERS:
        mine = [r for r in rows if r["sender"] == name]
        wall = [r["wall_us"] for r in mine]
        cpu = [r["cpu_us"] for r in mine]
        print(
            f"{name:<12} {mine[0]['events']:>7} "
            f"{min(wall):>9.1f} (med {statistics.median(wall):>7.1f}) "
            f"{min(cpu):>11.1f} (med {statistics.median(cpu):>7.1f})"
        )
    print(f"\nsweeps of {args.fleet} services, full reads, the median sweep beside a busy notifier")
    print(f"{'notifications':<14} {'sweep wall ms':>22} {'sweep CPU ms':>22} {'sweeps':>7}")
    for mode in ("noop", "messagingv2"):
        mine = [r for r in sweep_rows if r["mode"] == mode]
        wall = [r["sweep_wall_ms"] for r in mine]
        cpu = [r["sweep_cpu_ms"] for r in mine]
        print(
            f"{mode:<14} {min(wall):>8.1f} (med {statistics.median(wall):>7.1f}) "
            f"{min(cpu):>8.1f} (med {statistics.median(cpu):>7.1f}) "
            f"{sum(r['sweeps'] for r in mine):>7}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows + sweep_rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
