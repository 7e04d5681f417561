"""A reporting process for the detection scenario: join one service, then beat until killed.

argv[1] is a JSON object of ServiceGroup.from_options keywords plus "host" and
"binary". Prints the service's uuid once its first heartbeat is written, so
the parent knows when there is something to kill.
"""

from __future__ import annotations

import json
import sys
import time

from servicegroup import ServiceGroup


def main() -> None:
    options = json.loads(sys.argv[1])
    host, binary = options.pop("host"), options.pop("binary")
    sg = ServiceGroup.from_options(**options)
    service = sg.register(host, binary)
    sg.heartbeat(service)
    sg.join(service)
    print(service.uuid, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
