"""A demo recovery hook: put a claimed task back in a stable state, under the new epoch.

    python hook.py DATABASE_URL < claim.json

Idempotent: the fenced UPDATE matches only while recovery still holds the
epoch it was given, and setting "active" twice is harmless.
"""

from __future__ import annotations

import json
import sys

import sqlalchemy as sa

from servicegroup.claims import fence_sql, token


def main() -> None:
    claim = json.load(sys.stdin)
    keys = ("resource_type", "resource_id", "owner", "incarnation", "epoch")
    condition, params = fence_sql(token(*(claim[k] for k in keys)))
    engine = sa.create_engine(sys.argv[1])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE demo_tasks SET state = 'active', epoch = :epoch "
                f"WHERE id = :id AND {condition}"
            ),
            {"id": claim["resource_id"], "epoch": claim["epoch"], **params},
        )
    engine.dispose()


if __name__ == "__main__":
    main()
