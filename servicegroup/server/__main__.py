"""`python -m servicegroup.server --config-file F`: the daemon without the CLI.

Refusals (schema not at head, unknown driver, unreadable config) are one line
on stderr and exit 1, never a traceback: they are operator errors, not bugs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from oslo_config import cfg

from servicegroup.conf import make_conf
from servicegroup.exceptions import ServiceGroupError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    # Alembic narrates every schema check at INFO; a refusal should be one line.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        insecure = "--insecure" in args  # as for `servicegroup serve --insecure`
        conf = make_conf([arg for arg in args if arg != "--insecure"])
        from servicegroup.server.app import serve

        return serve(conf, insecure=insecure)
    except (ServiceGroupError, cfg.Error) as exc:
        print(f"servicegroup: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
