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
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import uuid as uuid_mod
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from servicegroup.api import ServiceGroup  # noqa: E402
from servicegroup.leader import lease  # noqa: E402
from servicegroup.leader.notifier import BusSender, LogSender, Notifier, Sender  # noqa: E402
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 events, 1 round")
    parser.add_argument("--json", help="write the rounds here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 200, 1
    rabbit = RabbitMQServer()
    rabbit.start()
    rows: list[dict] = []
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
            finally:
                sg.close()
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
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
