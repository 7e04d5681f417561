"""Liveness drivers: plug-ins in the `servicegroup.drivers` entry-point namespace."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, cast

import stevedore
from stevedore.exception import NoMatches

from servicegroup.exceptions import ConfigError

if TYPE_CHECKING:
    from servicegroup.drivers.base import Driver

NAMESPACE = "servicegroup.drivers"


def installed() -> list[str]:
    """Names from entry-point metadata; importing every plugin just to list it would log
    errors for drivers whose client library is missing."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def load(name: str) -> type[Driver]:
    """The driver class registered under `name`; unknown names list what is installed."""
    try:
        manager: stevedore.DriverManager[Any] = stevedore.DriverManager(
            NAMESPACE, name, invoke_on_load=False
        )
    except NoMatches:
        raise ConfigError(
            f"driver: unknown liveness driver {name!r}; installed drivers: "
            f"{', '.join(installed()) or 'none'}"
        ) from None
    return cast("type[Driver]", manager.driver)  # the class itself: invoke_on_load=False
