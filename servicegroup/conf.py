"""Configuration options, registered on a ConfigOpts the caller owns.

All options live here, driver groups included, so one file documents every
setting and the sample config is generated from one list_opts().

Each ServiceGroup gets its own ConfigOpts (never a process-global one), so
tests and embedding programs can run several groups with different settings
in one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oslo_config import cfg

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 8797


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "servicegroup")


default_opts = [
    cfg.StrOpt(
        "driver",
        default="db",
        help="Liveness driver, loaded from the servicegroup.drivers entry-point namespace "
        "(db, zookeeper/zk, memcached/mc, tooz). Service records stay in SQL whatever "
        "the driver.",
    ),
    cfg.FloatOpt(
        "report_interval",
        default=10.0,
        min=0.001,
        help="Seconds between two heartbeats of a joined service.",
    ),
    cfg.FloatOpt(
        "service_down_time",
        default=60.0,
        min=0.001,
        help="Seconds without a heartbeat after which a service is down. Must be greater "
        "than 2 x report_interval; otherwise 2.5 x report_interval is used.",
    ),
    cfg.StrOpt(
        "state_dir",
        default=_default_state_dir(),
        sample_default="~/.local/state/servicegroup",
        help="Directory for local state, such as the default SQLite database. Created on "
        "first use. Defaults to servicegroup under $XDG_STATE_HOME when that is set; "
        "a leading ~ is expanded.",
    ),
]

database_opts = [
    cfg.StrOpt(
        "connection",
        secret=True,
        help="SQLAlchemy URL of the database that holds the services table. Default: a "
        "SQLite file servicegroup.sqlite in state_dir.",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=5.0,
        min=0.001,
        help="Seconds to wait when opening a database connection.",
    ),
    cfg.FloatOpt(
        "query_timeout",
        default=10.0,
        min=0.001,
        help="Seconds to wait for the answer to one SQL statement before giving up on the "
        "connection (PostgreSQL: a client-side deadline, statement_timeout, TCP keepalives "
        "and tcp_user_timeout; MySQL: PyMySQL read/write timeouts). Without it a database "
        "behind a dead link hangs heartbeats, sweeps and requests.",
    ),
    cfg.IntOpt("pool_size", default=10, min=1, help="Connections kept open in the pool."),
]


def _token_opts(kind: str, may: str) -> list[cfg.Opt]:
    """A token list and a list of token files for one access level of the HTTP API."""
    return [
        cfg.ListOpt(
            f"{kind}_tokens",
            default=[],
            secret=True,
            help=f"Bearer tokens that {may}. Prefer {kind}_token_files: tokens in this file "
            "are readable by whoever can read the configuration.",
        ),
        cfg.ListOpt(
            f"{kind}_token_files",
            default=[],
            help=f"Files of {kind} tokens, one per line; blank lines and lines starting "
            "with # are ignored. Read when the daemon starts, and again on SIGHUP and when "
            "one changes (token_file_poll_interval); a reload that fails, or that would "
            "leave a kind of token with none or give one to a kind that had none, keeps "
            "the tokens loaded before (doc/operations.md, Token rotation).",
        ),
    ]


# [api] ssl_client_cert's values (server/tls.py turns them into an ssl.VerifyMode).
SSL_CLIENT_CERT = [
    ("none", "no client certificate is asked for"),
    (
        "optional",
        "a client may present a certificate, which must then be signed by ssl_ca_file; "
        "one without is served too (bearer tokens still apply)",
    ),
    (
        "required",
        "the handshake fails unless the client presents a certificate signed by ssl_ca_file",
    ),
]


def _tls_opts() -> list[cfg.Opt]:
    """The daemon's TLS: a certificate and its key make it HTTPS only; a CA adds mutual TLS."""
    return [
        cfg.StrOpt(
            "ssl_certfile",
            help="PEM certificate (followed by its intermediates) the daemon presents. With "
            "ssl_keyfile, the daemon serves HTTPS only. With tokens, listening beyond "
            "loopback needs it (or `--insecure`): bearer tokens must not cross a network in "
            "clear text. Read when the daemon starts, and again, with ssl_keyfile and "
            "ssl_ca_file, on SIGHUP and when one changes (token_file_poll_interval): a renewed "
            "certificate needs no restart; a renewed set that does not load whole is refused "
            "and the one loaded before is served on.",
        ),
        cfg.StrOpt(
            "ssl_keyfile",
            help="PEM private key of ssl_certfile, unencrypted (a daemon cannot type a "
            "passphrase); keep it mode 0640 root:servicegroup.",
        ),
        cfg.StrOpt(
            "ssl_ca_file",
            help="PEM bundle of the CAs whose client certificates the daemon accepts, for "
            "mutual TLS with ssl_client_cert = optional or required.",
        ),
        cfg.StrOpt(
            "ssl_client_cert",
            default="none",
            choices=SSL_CLIENT_CERT,
            help="Whether a client must present a certificate signed by ssl_ca_file (mutual "
            "TLS). Other than none, it needs ssl_certfile, ssl_keyfile and ssl_ca_file.",
        ),
    ]


# [api] metrics_per_service's values, also ?per_service= on /metrics (validation.PER_SERVICE).
METRICS_PER_SERVICE = [
    ("all", "one series per service in each per-service family"),
    (
        "not_up",
        "only services that are down or unknown: an alert on service_up == 0 "
        "still fires, at a fraction of the series",
    ),
    ("none", "no per-service series; the per-binary counts stay"),
]


# [api] auth_strategy's values (server/auth.py's Guard checks one or the other).
AUTH_STRATEGY = [
    ("token", "static bearer tokens from the *_tokens and *_token_files options"),
    (
        "keystone",
        "Keystone tokens in X-Auth-Token, validated against [keystone_authtoken] auth_url; "
        "roles map to levels through the policy rules servicegroup:read, :agent and :admin "
        "([oslo_policy] policy_file overrides them)",
    ),
]


api_opts = [
    cfg.StrOpt(
        "auth_strategy",
        default="token",
        choices=AUTH_STRATEGY,
        help="How requests are authenticated (doc/operations.md, Keystone authentication).",
    ),
    cfg.HostAddressOpt(
        "host",
        default="127.0.0.1",
        help="Address the daemon listens on. A non-loopback address needs agent or admin "
        "tokens and TLS (ssl_certfile, ssl_keyfile), or `servicegroup serve --insecure`.",
    ),
    cfg.PortOpt("port", default=DEFAULT_PORT, help="TCP port the daemon listens on."),
    cfg.IntOpt(
        "workers",
        default=1,
        min=1,
        help="Daemon processes sharing the port (SO_REUSEPORT; the kernel spreads "
        "connections over them). Each is a whole daemon with its own connections; they "
        "coordinate only through the records database and the sweeper lease, as daemons on "
        "several hosts do. One process uses about one core at most.",
    ),
    # With no token of any kind configured the API is open (fine on loopback).
    *_token_opts("agent", "may register, heartbeat and leave"),
    *_token_opts("admin", "may do everything, including PATCH and DELETE"),
    *_token_opts(
        "read",
        "must be shown to read /v1 and /metrics (any agent or admin token works too); "
        "without read tokens reads are open",
    ),
    cfg.FloatOpt(
        "token_file_poll_interval",
        default=1.0,
        min=0.01,
        help="Seconds between two looks at the stat (inode, size, mtime, ctime) of the token "
        "files and of ssl_certfile, ssl_keyfile and ssl_ca_file: a file that changed is read "
        "again within this long. A SIGHUP has them all read at once, whatever this says. A "
        "look is a few stat calls; shorter only narrows the time a rotated-out token keeps "
        "working, or a renewed certificate waits.",
    ),
    *_tls_opts(),
    cfg.StrOpt(
        "metrics_per_service",
        default="all",
        choices=METRICS_PER_SERVICE,
        help="Which services /metrics gives their own series (servicegroup_service_up, "
        "_info, _disabled, _forced_down, _version, _last_heartbeat_timestamp_seconds). A "
        "large fleet makes a scrape of every service costly for the daemon and for "
        "Prometheus alike (doc/operations.md); servicegroup_services counts every service "
        "whatever this says.",
    ),
]

zookeeper_opts = [
    cfg.ListOpt(
        "hosts",
        default=["127.0.0.1:2181"],
        help="ZooKeeper servers as host:port, for the zookeeper driver.",
    ),
    cfg.StrOpt(
        "node_lifetime",
        choices=[
            (
                "session",
                "ephemeral znodes of the beating process's session: a crashed process is "
                "down when its session expires (session_timeout)",
            ),
            (
                "heartbeat",
                "persistent znodes, judged by their age alone and removed by leave and "
                "delete: a service may beat through any of several daemons, and one "
                "daemon's death takes no service down",
            ),
        ],
        help="How long a service's znode lives. Unset: session in a process that beats "
        "for itself (the library, the agent), heartbeat in `servicegroup serve`, which "
        "beats on behalf of services that may reach any daemon behind a load balancer.",
    ),
    cfg.StrOpt(
        "root",
        default="/servicegroup",
        help="Znode under which services are kept as <root>/<binary>/<host>.",
    ),
    cfg.FloatOpt(
        "session_timeout",
        default=10.0,
        min=0.001,
        help="ZooKeeper session timeout in seconds: how long after a crash its ephemeral "
        "nodes disappear.",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=5.0,
        min=0.001,
        help="Seconds to wait for a ZooKeeper connection (and for each request).",
    ),
]

memcached_opts = [
    cfg.ListOpt(
        "servers",
        default=["127.0.0.1:11211"],
        help="memcached servers as host:port; several are spread with consistent hashing.",
    ),
    cfg.FloatOpt(
        "socket_timeout",
        default=1.0,
        min=0.001,
        help="Seconds to wait for a memcached reply (pymemcache waits forever by default).",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=1.0,
        min=0.001,
        help="Seconds to wait for a memcached connection.",
    ),
    cfg.StrOpt("key_prefix", default="sg:", help="Prefix of every key servicegroup writes."),
]

tooz_opts = [
    cfg.StrOpt(
        "backend_url",
        default="redis://127.0.0.1:6379",
        secret=True,
        help="tooz coordination backend URL (redis://, zookeeper://, etcd3+http://, ...). "
        "Membership expiry parameters (redis membership_timeout, zookeeper timeout, ...) "
        "are derived from service_down_time unless set here.",
    ),
    cfg.FloatOpt(
        "request_timeout",
        default=5.0,
        min=0.001,
        help="Seconds to wait for one tooz request (reads, pings, joins); also the redis "
        "socket and connect timeouts unless backend_url sets them.",
    ),
]

events_opts = [
    cfg.FloatOpt(
        "sweep_interval",
        default=1.0,
        min=0.001,
        help="Seconds between two sweeps: the leading daemon reads the state of every "
        "service that can have changed (see full_sweep_interval) and records each change "
        "as an event. Down events do not wait for it: the sweeper also wakes when the "
        "first service it saw up is due to expire.",
    ),
    cfg.FloatOpt(
        "full_sweep_interval",
        default=300.0,
        min=0.001,
        help="Seconds between two sweeps that read every service. The sweeps between them "
        "read only what can have changed: the up services whose last heartbeat is due to "
        "expire, the services that are not up, and those named by new events (registration, "
        "admin change, leave, delete). So a sweep costs what changed, not the fleet's size. "
        "Drivers without heartbeat times (tooz) read every service every sweep.",
    ),
    cfg.FloatOpt(
        "sweep_budget",
        default=0.05,
        min=0.001,
        max=1.0,
        help="The largest share of the leading daemon's CPU spent sweeping. When a sweep's "
        "thread uses more than sweep_budget x sweep_interval of CPU (a large fleet), the next "
        "sweep waits that CPU time / sweep_budget, at most service_down_time / 2: up events "
        "come later, down events still come when due, and the API keeps its CPU.",
    ),
    cfg.IntOpt(
        "sweep_slice",
        default=1000,
        min=0,
        help="Services per slice of a sweep: the leading daemon reads its fleet this many "
        "at a time (one SELECT and one liveness read each), pausing between slices as long "
        "as each took, so a heartbeat never waits behind a whole fleet's read. 0 reads the "
        "whole fleet at once. Where a liveness read is a whole group's (tooz), the slices "
        "of one sweep share one such read per group.",
    ),
    cfg.FloatOpt(
        "leader_lease",
        min=0.001,
        help="Seconds a daemon's sweeper leadership lasts unless renewed (every sweep, and "
        "every third of it between sweeps). "
        "Default: 3 x sweep_interval. Kept below service_down_time - sweep_interval, so a "
        "dead leader is replaced before its services' own deaths could go unnoticed.",
    ),
    cfg.IntOpt(
        "down_after",
        default=1,
        min=1,
        help="Consecutive sweeps that must see a service down (or unknown) before the event "
        "is emitted: flap damping.",
    ),
    cfg.IntOpt(
        "up_after",
        default=1,
        min=1,
        help="Consecutive sweeps that must see a service up before the event is emitted.",
    ),
    cfg.FloatOpt(
        "mass_down_threshold",
        default=0.5,
        min=0.0,
        max=1.0,
        help="Mass-expiry protection: when more than this fraction of a binary's services "
        "would go down in one sweep, their down events are held back for "
        "service_down_time and written only for services still down then; services that "
        "come back meanwhile (a backend blip) are never reported. 1.0 disables it.",
    ),
    cfg.IntOpt(
        "mass_down_min_services",
        default=3,
        min=1,
        help="Binaries with fewer services than this are never under mass-expiry "
        "protection (with one service, any death is 100% of the binary).",
    ),
    cfg.FloatOpt(
        "retention",
        default=7 * 24 * 3600.0,
        min=1.0,
        help="Seconds events are kept; the leader prunes older ones.",
    ),
    cfg.MultiStrOpt(
        "hooks",
        default=[],
        help="Command run by the leader on each event, with the event as JSON on stdin. "
        "Split like a shell would (shlex), but run without a shell. Repeat for several.",
    ),
    cfg.FloatOpt(
        "hook_timeout",
        default=10.0,
        min=0.001,
        help="Seconds a hook may run before it is killed and counted as failed.",
    ),
]

claims_opts = [
    cfg.MultiStrOpt(
        "policies",
        default=[],
        help="What recovery does with the claims of a resource type and operation once "
        "their owner is down (or forced down, or deleted), or they outlive max_duration "
        "while it is up. One line per rule: `TYPE:OPERATION = ACTION[, max_duration=S]"
        "[, grace=S][, hook=NAME]`, TYPE or OPERATION may be `*`; the most specific "
        "rule wins. ACTION is release (anyone may claim it again), delete (the claim "
        "disappears; its epoch is kept) or handoff (run the recovery hook NAME with the "
        "claim as JSON, under a new epoch, retried with back-off until it succeeds). "
        "Example: `compute:rebuilding = handoff, hook=reset-task, max_duration=600`.",
    ),
    cfg.StrOpt(
        "default_policy",
        default="release",
        choices=["release", "delete"],
        help="The action for claims that no [claims] policies line matches.",
    ),
    cfg.FloatOpt(
        "grace",
        default=5.0,
        min=0.0,
        help="Seconds between revoking a claim (its epoch moves on, so its former owner's "
        "renewals and fenced writes fail) and recovering it, so that a barely-alive owner "
        "can notice and stop (Consul calls it lock-delay). A policy's grace=S overrides "
        "it. Skipped when the owner was forced down or deleted.",
    ),
    cfg.MultiStrOpt(
        "recovery_hooks",
        default=[],
        help="Named recovery hook commands, one per line: `NAME = COMMAND`. The command "
        "gets the claim as JSON on stdin and must exit 0 once the work is back in a "
        "stable state; it must be idempotent. A hook NAME not listed here is looked up "
        "as an entry point in the servicegroup.recovery namespace (a callable taking "
        "the claim as a dict; `log` is built in).",
    ),
    cfg.FloatOpt(
        "hook_timeout",
        default=30.0,
        min=0.001,
        help="Seconds a recovery hook may run before it counts as timed out (a command "
        "is killed) and is retried.",
    ),
    cfg.FloatOpt(
        "retry_backoff",
        default=1.0,
        min=0.001,
        help="Seconds before retrying a failed recovery hook; doubled after each failure.",
    ),
    cfg.FloatOpt(
        "retry_backoff_max",
        default=60.0,
        min=0.001,
        help="The longest wait between two attempts of a failing recovery hook.",
    ),
]

binaries_opts: list[cfg.Opt] = [
    cfg.DictOpt(
        "service_down_time",
        default={},
        help="Per-binary service_down_time, as BINARY:SECONDS entries separated by commas, "
        "e.g. `nova-conductor:20,nova-compute:120`. A binary not named here uses "
        "[DEFAULT] service_down_time. Each must be greater than 2 x the binary's "
        "report_interval, or the daemon refuses to start. States, events, metrics and "
        "claims recovery all judge a service by its binary's down time; a query may still "
        "ask with its own (?down_time=).",
    ),
    cfg.DictOpt(
        "report_interval",
        default={},
        help="Per-binary report_interval, as BINARY:SECONDS entries separated by commas, "
        "e.g. `nova-conductor:5`: how often a process joined through this library, or "
        "`servicegroup agent` without --interval, beats for a service of that binary "
        "(GET /v1/binaries/{binary}/times tells it to agents). A binary not named here "
        "uses [DEFAULT] report_interval.",
    ),
]

# [keystone_authtoken]: the group name OpenStack deployment tools already fill in. The
# service user's credentials are keystoneauth1's own options (auth plugin and session),
# registered by server/keystone_auth.py when it loads them, and listed for the sample
# by list_opts(): importing keystoneauth1 costs ~0.1 s, which every agent and CLI run
# would pay here. These are how this daemon validates and caches the tokens it is shown.
keystone_authtoken_opts = [
    cfg.StrOpt(
        "accepted_project_id",
        help="Id of the Keystone project whose tokens this daemon accepts: the target "
        "project_id of the policy's servicegroup:scope rule. Required when [api] "
        "auth_strategy is keystone.",
    ),
    cfg.StrOpt(
        "interface",
        default="public",
        choices=["public", "internal", "admin"],
        help="Which identity endpoint of the catalog validates tokens.",
    ),
    cfg.FloatOpt(
        "token_cache_ttl",
        default=300.0,
        min=0.0,
        help="Seconds a validated token is trusted without asking Keystone again (never "
        "beyond the token's own expiry). A token revoked in Keystone keeps working here for "
        "up to this long; 0 asks Keystone on every request.",
    ),
    cfg.IntOpt(
        "token_cache_size",
        default=10000,
        min=1,
        help="Most validated tokens kept at once; the least recently used go first.",
    ),
]

notifications_opts = [
    cfg.StrOpt(
        "driver",
        default="noop",
        choices=[
            ("noop", "send nothing (the default: notifications are optional)"),
            ("messagingv2", "versioned notifications on the message bus, as nova sends them"),
            ("log", "each notification as one log line (logger oslo.messaging.notification.*)"),
        ],
        help="How the sweeping leader sends a notification for every event (doc/notifications.md).",
    ),
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="The message bus, e.g. rabbit://user:pass@host:5672/. Unset: oslo.messaging's "
        "own fallback, [oslo_messaging_notifications] transport_url, then [DEFAULT] "
        "transport_url. The driver's own options stay in oslo.messaging's groups, e.g. "
        "[oslo_messaging_rabbit] amqp_durable_queues.",
    ),
    cfg.ListOpt(
        "topics",
        default=["notifications"],
        help="Topics the notifications are sent to; a listener's queue is TOPIC.info.",
    ),
    cfg.StrOpt(
        "publisher_id",
        help="The publisher_id of every notification. Unset: servicegroup:HOSTNAME of the "
        "leader that sends it.",
    ),
    cfg.FloatOpt(
        "retry_interval",
        default=1.0,
        min=0.001,
        help="Seconds before the leader sends a notification again after the bus refused "
        "it; doubled after each failure up to retry_interval_max. The event waits, and "
        "the ones after it, in order: nothing is dropped while the bus is away.",
    ),
    cfg.FloatOpt(
        "retry_interval_max",
        default=30.0,
        min=0.001,
        help="The longest wait between two attempts to send a notification.",
    ),
]

GROUPS: dict[str | None, list[cfg.Opt]] = {
    None: default_opts,
    "database": database_opts,
    "api": api_opts,
    "zookeeper": zookeeper_opts,
    "memcached": memcached_opts,
    "tooz": tooz_opts,
    "events": events_opts,
    "claims": claims_opts,
    "binaries": binaries_opts,
    "keystone_authtoken": keystone_authtoken_opts,
    "notifications": notifications_opts,
}


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in GROUPS.items():
        conf.register_opts(opts, group=group)


def _keystoneauth_opts() -> list[cfg.Opt]:
    """keystoneauth1's [keystone_authtoken] options, with the usual auth_type = password's."""
    from keystoneauth1 import loading as ks_loading

    return [
        *ks_loading.get_auth_common_conf_options(),
        *ks_loading.get_auth_plugin_conf_options("password"),
        *ks_loading.get_session_conf_options(),
    ]


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator (namespace 'servicegroup')."""
    extra = {"keystone_authtoken": _keystoneauth_opts()}
    return [
        ("DEFAULT" if group is None else group, [*extra.get(str(group), []), *opts])
        for group, opts in GROUPS.items()
    ]


def make_conf(
    args: Sequence[str] = (),
    config_files: Sequence[str] | None = None,
    **overrides: Any,
) -> cfg.ConfigOpts:
    """Build a parsed ConfigOpts.

    `overrides` take 'opt' for [DEFAULT] or 'group__opt' for others, e.g.
    ``make_conf(report_interval=0.1, database__connection="sqlite://")``.
    """
    conf = cfg.ConfigOpts()
    register_opts(conf)
    default_files = None if config_files is None else list(config_files)
    conf(
        list(args),
        project="servicegroup",
        default_config_files=default_files,
        validate_default_values=True,
    )
    for key, value in overrides.items():
        group, _, name = key.rpartition("__")
        conf.set_override(name, value, group=group or None)
    return conf


def effective_down_time(conf: cfg.ConfigOpts) -> float:
    """service_down_time, corrected the way nova corrects it.

    A down time of two report intervals or less flaps on one late heartbeat,
    so it is raised to 2.5 x report_interval with a warning.
    """
    down: float = conf.service_down_time
    interval: float = conf.report_interval
    if down <= 2 * interval:
        fixed = 2.5 * interval
        LOG.warning(
            "service_down_time (%.3fs) must be greater than 2 x report_interval (%.3fs); "
            "using %.3fs",
            down,
            interval,
            fixed,
        )
        return fixed
    return down


def database_url(conf: cfg.ConfigOpts) -> str:
    if conf.database.connection:
        return str(conf.database.connection)
    state_dir = Path(conf.state_dir).expanduser()
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir / 'servicegroup.sqlite'}"
