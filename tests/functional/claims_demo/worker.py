"""A demo worker for the claims end-to-end tests: claims tasks, updates them under fencing.

    python worker.py CONFIG.json work|hang

CONFIG holds the ServiceGroup options and the task ids. It registers, joins
(its reporter thread heartbeats from now on), claims every task for
"rebuilding", moves each to "rebuilding" with a fenced UPDATE, prints one
JSON line with its claim tokens, then either keeps working (renewing each
claim every 0.1 s, until it is SIGKILLed) or hangs: the main loop stops
renewing, while the reporter thread keeps the service up.
"""

from __future__ import annotations

import json
import sys
import threading

import sqlalchemy as sa

from servicegroup import ServiceGroup
from servicegroup.claims import fence

TASKS = sa.Table(
    "demo_tasks",
    sa.MetaData(),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(32)),
    sa.Column("epoch", sa.BigInteger),
)


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    mode = sys.argv[2]
    sg = ServiceGroup.from_options(**config["options"])
    service = sg.register(config["host"], "worker")
    sg.join(service)
    claims, tokens = [], []
    for task in config["tasks"]:
        claim = sg.claim(service, "task", task, "rebuilding", {"step": "start"})
        with sg.engine.begin() as conn:
            done = conn.execute(
                TASKS.update()
                .where((TASKS.c.id == task) & fence(claim))
                .values(state="rebuilding", epoch=claim.epoch)
            ).rowcount
        assert done == 1
        claims.append(claim)
        tokens.append(claim.as_dict())
    print(json.dumps({"service": service.uuid, "claims": tokens}), flush=True)
    if mode == "hang":
        threading.Event().wait()  # stuck for ever; the reporter thread beats on
    while True:  # working: each renewal says "still making progress"
        claims = [sg.renew(claim) for claim in claims]
        threading.Event().wait(0.1)


if __name__ == "__main__":
    main()
