"""servicegroup: who in a fleet of cooperating daemons is alive."""

from servicegroup.api import ServiceGroup
from servicegroup.reporter import Reporter
from servicegroup.service import Service, ServiceStatus, State

__all__ = ["Reporter", "Service", "ServiceGroup", "ServiceStatus", "State"]
