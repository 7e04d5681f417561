"""A failure said once when it starts, and once when it ends.

The loops that retry through outages (the sweeper, the notifier, the event
watcher, the agent's registration, the API's liveness reads) run every
interval: a log line per failed attempt would bury the one line that
matters under thousands, and a recovery nobody says leaves an operator
reading an outage that is over. Each loop keeps one of these.

Usage::

    failures = FailureLog(LOG, "sweeper: cannot sweep: %s", "sweeper: database answers again")
    try:
        sweep()
        failures.ended()
    except BackendError as exc:
        failures.failed(exc)
"""

from __future__ import annotations

import logging


class FailureLog:
    """Logs `failed` (a warning) on the first failure of a run, `recovered` (info) after it."""

    def __init__(self, logger: logging.Logger, failed: str, recovered: str | None = None) -> None:
        self.logger = logger
        self.failed_message = failed
        self.recovered_message = recovered
        self.failing = False

    def failed(self, *args: object) -> None:
        """An attempt failed: said if it is the first of a run; `args` fill `failed`."""
        if not self.failing:
            self.failing = True
            self.logger.warning(self.failed_message, *args)

    def ended(self, *args: object) -> None:
        """An attempt worked: the run of failures, if any, is over and said so."""
        if self.failing:
            self.failing = False
            if self.recovered_message is not None:
                self.logger.info(self.recovered_message, *args)
