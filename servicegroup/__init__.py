"""servicegroup: who in a fleet of cooperating daemons is alive."""

from servicegroup.api import ServiceGroup
from servicegroup.reporter import Reporter
from servicegroup.service import Registration, Service, ServiceStatus, State

__all__ = ["Registration", "Reporter", "Service", "ServiceGroup", "ServiceStatus", "State"]
