"""`servicegroup`: the admin command line.

It talks to the records database and the liveness driver directly, through
the same ServiceGroup the daemon uses, so an operator can inspect and fix a
fleet while the daemon is down. (`agent --daemon-url` goes through a daemon
instead, and `keystone-token` only talks to Keystone.)

Configuration
    ``--config-file F`` (repeatable) and ``--config-dir D`` are handed to
    oslo.config unchanged, and may be given before or after the command.
    Without ``--config-file``, oslo.config's default locations for the
    project apply: the first of ``~/.servicegroup/servicegroup.conf``,
    ``~/servicegroup.conf``, ``/etc/servicegroup/servicegroup.conf``,
    ``/etc/servicegroup.conf`` that exists (and a ``servicegroup.conf.d``
    directory beside it). An explicit ``--config-file`` replaces those
    defaults, it does not add to them. Environment variables such as
    ``OS_DATABASE__CONNECTION`` override files, as everywhere in oslo.config.

Exit codes (mapped in one place, `_EXIT_CODES`)
    0  success
    1  the command could not be done: service not found, backend unreachable,
       schema out of date, unusable configuration, internal error
    2  the command line is wrong: usage error, or a value that breaks a field
       rule (bad UUID, empty host, unknown state, ...)
    130  interrupted

Every error is one line on stderr, ``servicegroup: error: ...``; a traceback
is printed only with ``--debug``.

``version min|max BINARY`` prints ``none`` (exit 0) when no service of that
binary exists (or, with --up-only, none is up): "no version" is an answer,
not a failure, and scripts can test for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TextIO

from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from servicegroup import conf as sg_conf
from servicegroup.exceptions import InvalidInput, ServiceGroupError
from servicegroup.service import ServiceStatus

LOG = logging.getLogger(__name__)

PROG = "servicegroup"
PROJECT = "servicegroup"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

TABLE_COLUMNS = (
    ("id", "id"),
    ("host", "host"),
    ("binary", "binary"),
    ("topic", "topic"),
    ("az", "availability_zone"),
    ("version", "version"),
    ("state", "state"),
    ("disabled", "disabled"),
    ("forced_down", "forced_down"),
    ("last_heartbeat", "last_heartbeat"),
)


class UsageError(Exception):
    """argparse's complaint, raised instead of exiting so main() reports it like any error."""


# The one place errors become exit codes. Most specific first: the first
# matching class decides the code, and the prefix (if any) says what failed
# when the exception's own text does not.
_EXIT_CODES: tuple[tuple[type[Exception], int, str], ...] = (
    (UsageError, EXIT_USAGE, ""),
    (InvalidInput, EXIT_USAGE, ""),
    # NotFound, BackendError, ConfigError, SchemaOutOfDate, ClaimHeld, ClaimLost
    (ServiceGroupError, EXIT_FAILURE, ""),
    (cfg.Error, EXIT_FAILURE, "configuration: "),  # file missing or unparsable, bad value
    (sa_exc.ArgumentError, EXIT_FAILURE, "[database] connection: "),  # not a usable URL
    # A backend's client library is not installed (psycopg, PyMySQL, kazoo, ...).
    (ImportError, EXIT_FAILURE, "missing dependency: "),
)


# -- argument parsing ----------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Options whose definition costs an import (keystoneauth1's, ~0.3 s): added
        # from the command's own arguments when it is the command being parsed,
        # so no other command, nor `servicegroup --help`, pays for them.
        self.deferred: list[Callable[[argparse.ArgumentParser, list[str]], None]] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        while self.deferred:
            self.deferred.pop(0)(self, argv)
        return super().parse_known_args(argv, namespace)

    def error(self, message: str) -> NoReturn:
        # argparse prints usage plus a message and exits; we want one line and
        # the exit code decided in main().
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        hint = f"{self.prog} --help"
        raise UsageError(f"{where}{message} (see '{hint}')")


def _add_config_options(parser: argparse.ArgumentParser, *, late: bool) -> None:
    """The options oslo.config owns, accepted both before and after the command.

    Before the command they land in `config_file`; after it, in
    `late_config_file`, because argparse lets a subcommand's namespace
    overwrite the parent's values for the same dest.
    """
    prefix = "late_" if late else ""
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--config-file",
        dest=f"{prefix}config_file",
        action="append",
        default=[],
        metavar="PATH",
        help="configuration file; repeat to layer several (later files win). "
        "Default: the first of ~/.servicegroup/servicegroup.conf, ~/servicegroup.conf, "
        "/etc/servicegroup/servicegroup.conf, /etc/servicegroup.conf",
    )
    group.add_argument(
        "--config-dir",
        dest=f"{prefix}config_dir",
        action="append",
        default=[],
        metavar="DIR",
        help="directory of *.conf files, read after the config files",
    )
    group.add_argument(
        "--debug",
        dest=f"{prefix}debug",
        action="store_true",
        help="debug logging, and a traceback for internal errors",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Administer a servicegroup: migrate its database, run the daemon, "
        "list and change services.",
        epilog="Exit codes: 0 success, 1 failure (not found, backend or database "
        "unreachable, schema out of date, bad configuration), 2 usage or invalid input.",
    )
    _add_config_options(parser, late=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def leaf(
        sub: argparse._SubParsersAction[Any],
        name: str,
        func: Callable[..., int],
        help: str,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        _add_config_options(p, late=True)
        p.set_defaults(func=func)
        return p

    # db
    db = commands.add_parser("db", help="database schema", description="database schema")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    leaf(db_sub, "upgrade", cmd_db_upgrade, "migrate the database to the latest revision")
    leaf(db_sub, "version", cmd_db_version, "show the current and latest revision")

    # serve
    p = leaf(commands, "serve", cmd_serve, "run the HTTP daemon in the foreground")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="listen on a non-loopback [api] host even with no agent or admin tokens",
    )

    # agent
    _add_agent(leaf(commands, "agent", cmd_agent, "heartbeat for a service while a check passes"))

    # keystone-token
    p = leaf(
        commands,
        "keystone-token",
        cmd_keystone_token,
        "write a Keystone token for the OpenStack credentials to a file (mode 0600), "
        "and with --renew keep writing a new one before it expires",
    )
    p.add_argument("--output", required=True, metavar="FILE", help="the file to (re)write")
    p.add_argument(
        "--renew",
        action="store_true",
        help="keep running, writing a new token before the current one expires",
    )
    p.add_argument(
        "--renew-before",
        type=float,
        metavar="SECONDS",
        help="renew when this much of the token's life is left (default 300; at most half "
        "its lifetime)",
    )
    _add_keystone_credentials(p)

    # service
    svc = commands.add_parser("service", help="list and change services")
    svc_sub = svc.add_subparsers(dest="service_command", metavar="ACTION", required=True)

    p = leaf(svc_sub, "list", cmd_service_list, "list services with their state")
    p.add_argument("--binary", help="only services of this binary")
    p.add_argument("--host", help="only services on this host")
    p.add_argument("--topic", help="only services with this topic")
    p.add_argument(
        "--availability-zone",
        "--az",
        dest="availability_zone",
        metavar="AZ",
        help="only services in this availability zone",
    )
    p.add_argument("--state", choices=("up", "down", "unknown"), help="only services in this state")
    _add_down_time(p)
    _add_format(p)

    p = leaf(svc_sub, "show", cmd_service_show, "show one service")
    p.add_argument("id", metavar="ID", help="service id (UUID)")
    _add_down_time(p)
    _add_format(p)

    p = leaf(svc_sub, "enable", cmd_service_enable, "enable a service (clears the reason)")
    p.add_argument("id", metavar="ID", help="service id (UUID)")

    p = leaf(svc_sub, "disable", cmd_service_disable, "disable a service")
    p.add_argument("id", metavar="ID", help="service id (UUID)")
    p.add_argument("--reason", help="why, shown to other operators")

    p = leaf(
        svc_sub, "force-down", cmd_service_force_down, "mark a service down whatever it reports"
    )
    p.add_argument("id", metavar="ID", help="service id (UUID)")
    p.add_argument("--unset", action="store_true", help="clear forced_down instead")

    p = leaf(svc_sub, "delete", cmd_service_delete, "delete a service record")
    p.add_argument("id", metavar="ID", help="service id (UUID)")

    # events
    p = leaf(commands, "events", cmd_events, "print service up/down events, optionally following")
    p.add_argument("--since", type=int, default=None, metavar="ID", help="only events after ID")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--binary", help="only events of this binary")
    p.add_argument("--host", help="only events of this host")
    _add_format(p)

    # claim
    _add_claim_commands(commands, leaf)

    # version
    ver = commands.add_parser("version", help="lowest or highest version of a binary")
    ver_sub = ver.add_subparsers(dest="version_command", metavar="WHICH", required=True)
    for which in ("min", "max"):
        p = leaf(
            ver_sub,
            which,
            cmd_version,
            f"print the {'lowest' if which == 'min' else 'highest'} version of BINARY, "
            "or 'none' when there is no such service",
        )
        p.add_argument("binary", metavar="BINARY")
        p.add_argument("--up-only", action="store_true", help="consider only services that are up")
    return parser


def _add_claim_commands(
    commands: argparse._SubParsersAction[Any], leaf: Callable[..., Any]
) -> None:
    claim = commands.add_parser("claim", help="list, show and release claims on work")
    sub = claim.add_subparsers(dest="claim_command", metavar="ACTION", required=True)
    p = leaf(sub, "list", cmd_claim_list, "list claims (held, recovering, released)")
    p.add_argument("--owner", metavar="ID", help="only claims of this service (UUID)")
    p.add_argument("--type", dest="resource_type", help="only claims on this resource type")
    p.add_argument(
        "--state", choices=("held", "recovering", "released", "deleted"), help="only this state"
    )
    _add_format(p)
    p = leaf(sub, "show", cmd_claim_show, "show the claim on one resource")
    p.add_argument("resource_type", metavar="TYPE")
    p.add_argument("resource_id", metavar="ID")
    _add_format(p)
    p = leaf(
        sub,
        "release",
        cmd_claim_release,
        "release a claim at a given epoch, as its owner would: refused if it moved on",
    )
    p.add_argument("resource_type", metavar="TYPE")
    p.add_argument("resource_id", metavar="ID")
    p.add_argument("--epoch", type=int, required=True, help="the epoch you mean to release")
    p = leaf(
        sub,
        "force-release",
        cmd_claim_force_release,
        "free a live claim whoever holds it (bumps the epoch, recorded as an event)",
    )
    p.add_argument("resource_type", metavar="TYPE")
    p.add_argument("resource_id", metavar="ID")
    p.add_argument("--reason", required=True, help="why, recorded in the event")


def _add_agent(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the service's host name")
    p.add_argument("--binary", required=True, help="the service's binary name")
    p.add_argument("--topic")
    p.add_argument("--availability-zone", "--az", dest="availability_zone", metavar="AZ")
    p.add_argument("--version", type=int, default=0, help="the service's version (default 0)")
    check = p.add_mutually_exclusive_group(required=True)
    check.add_argument("--check", metavar="CMD", help="command that exits 0 while healthy")
    check.add_argument("--pidfile", metavar="FILE", help="healthy while this pid runs")
    check.add_argument("--http-check", metavar="URL", help="healthy while GET URL is 2xx")
    p.add_argument(
        "--interval",
        type=float,
        help="seconds between checks and heartbeats (default: the binary's report_interval, "
        "as the daemon tells it, or [binaries] of --config-file without --daemon-url; "
        "[DEFAULT] report_interval from a daemon too old to tell). Given, it wins, with a "
        "warning in the log when the binary's service_down_time is not more than 2 x it",
    )
    p.add_argument("--check-timeout", type=float, help="seconds a check may take (default 5)")
    p.add_argument(
        "--daemon-url",
        metavar="URL",
        help="go through the HTTP daemon; without it, straight to the configured backend",
    )
    p.add_argument("--token", help="token for --daemon-url (default $SERVICEGROUP_TOKEN)")
    p.add_argument(
        "--auth-strategy",
        choices=[name for name, _help in sg_conf.AUTH_STRATEGY],
        help="how --daemon-url checks --token, its [api] auth_strategy: token (the default, "
        "sent as Authorization: Bearer) or keystone (a Keystone token, sent as X-Auth-Token; "
        "without --token, one the agent signs in for with the --os-* credentials below and "
        "renews before it expires)",
    )
    p.add_argument(
        "--ca-file",
        metavar="PEM",
        help="CA bundle that an https:// --daemon-url's certificate must be signed by "
        "(default: $SSL_CERT_FILE, else the certifi bundle)",
    )
    p.add_argument(
        "--client-cert",
        metavar="PEM",
        help="certificate to show a daemon that asks for one (mutual TLS)",
    )
    p.add_argument(
        "--client-key",
        metavar="PEM",
        help="unencrypted key of --client-cert, unless that file holds it too",
    )
    p.add_argument(
        "--leave-on-failure",
        action="store_true",
        help="take the service down at once when the check fails",
    )
    _add_keystone_credentials(p)


def _add_keystone_credentials(p: argparse.ArgumentParser) -> None:
    """The OpenStack clients' --os-* options and OS_* variables (keystone_session.py)."""

    def add(parser: argparse.ArgumentParser, argv: list[str]) -> None:
        from servicegroup.keystone_session import add_credential_arguments

        add_credential_arguments(parser, argv)

    if isinstance(p, _Parser):
        p.deferred.append(add)


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table (default, for people) or json (for scripts)",
    )


# -- commands ------------------------------------------------------------------


def cmd_db_upgrade(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    from servicegroup.db import migration

    with _engine(conf) as engine:
        before = migration.current(engine)
        migration.upgrade(engine)
        after = migration.current(engine)
    if before == after:
        print(f"database already at revision {after}")
    else:
        print(f"database upgraded from {before or 'none'} to revision {after}")
    return EXIT_OK


def cmd_db_version(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    from servicegroup.db import migration

    with _engine(conf) as engine:
        current = migration.current(engine)
    print(f"current: {current or 'none'}")
    print(f"head: {migration.head()}")
    return EXIT_OK


def cmd_serve(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    try:
        from servicegroup.server.app import serve
    except ImportError as exc:
        raise ServiceGroupError(f"serve: the HTTP server cannot be loaded: {exc}") from exc
    return serve(conf, insecure=args.insecure)


def cmd_agent(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    import functools
    import shlex

    from servicegroup import agent

    timeout = args.check_timeout or agent.DEFAULT_CHECK_TIMEOUT
    for name, value in (("interval", args.interval), ("check-timeout", timeout)):
        if value is not None and not 0 < value < float("inf"):  # nan too
            raise InvalidInput(name, "must be a positive number of seconds")
    if args.check is not None:
        if not shlex.split(args.check):
            raise InvalidInput("check", "must be a command")
        check = functools.partial(agent.check_command, shlex.split(args.check), timeout)
    elif args.pidfile is not None:
        check = functools.partial(agent.check_pidfile, args.pidfile)
    else:
        check = functools.partial(agent.check_http, args.http_check, timeout)
    transport: agent.Transport
    for name in ("ca_file", "client_cert", "client_key", "auth_strategy"):
        if getattr(args, name) is not None and not args.daemon_url:
            raise InvalidInput(name.replace("_", "-"), "only applies with --daemon-url")
    if args.daemon_url:
        from servicegroup.client import TOKEN_ENV, Client

        token = args.token or os.environ.get(TOKEN_ENV) or None
        keystone = None
        if args.auth_strategy == "keystone" and token is None:
            from servicegroup.keystone_session import session_from_arguments

            keystone = session_from_arguments(args, timeout)
        elif args.auth_strategy == "keystone" and args.os_auth_url:
            raise InvalidInput(
                "token",
                f"give either a token (--token, ${TOKEN_ENV}) or OpenStack credentials "
                "(--os-auth-url, ...), not both",
            )
        client = Client(
            args.daemon_url,
            token,
            timeout=timeout,
            ca_file=args.ca_file,
            client_cert=args.client_cert,
            client_key=args.client_key,
            auth_strategy=args.auth_strategy or "token",
            keystone_session=keystone,
        )
        transport = agent.HttpTransport(client)
    else:
        from servicegroup.api import ServiceGroup

        transport = agent.DirectTransport(ServiceGroup(conf))
    identity = {
        key: getattr(args, key)
        for key in ("host", "binary", "topic", "availability_zone", "version")
    }
    # No --interval: the binary's report_interval, told by the backend at registration.
    runner = agent.Agent(
        transport,
        identity,
        check,
        args.interval,
        args.leave_on_failure,
        default_interval=conf.report_interval,
    )
    try:
        with agent.stop_on_signals(runner):
            return runner.run()
    finally:
        transport.close()


def cmd_keystone_token(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    from pathlib import Path

    from servicegroup import agent
    from servicegroup.client import DEFAULT_TIMEOUT
    from servicegroup.keystone_session import session_from_arguments
    from servicegroup.keystone_token_file import DEFAULT_RENEW_BEFORE, TokenFile

    if args.renew_before is not None and not args.renew:
        raise InvalidInput("renew-before", "only applies with --renew")
    renew_before = DEFAULT_RENEW_BEFORE if args.renew_before is None else args.renew_before
    session = session_from_arguments(args, DEFAULT_TIMEOUT)
    token_file = TokenFile(session, Path(args.output), renew_before)
    if not args.renew:
        expires = token_file.write().expires.isoformat(timespec="seconds")
        LOG.info("wrote a Keystone token expiring %s to %s", expires, args.output)
        return EXIT_OK
    with agent.stop_on_signals(token_file):
        return token_file.run()


def _add_down_time(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--down-time",
        type=float,
        metavar="SECONDS",
        help="judge with this down time instead of each binary's ([binaries], service_down_time)",
    )


def cmd_service_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        statuses = group.get_all(
            binary=args.binary,
            host=args.host,
            topic=args.topic,
            availability_zone=args.availability_zone,
            state=args.state,
            down_time=args.down_time,
        )
    if args.format == "json":
        _print_json({"services": [s.as_dict() for s in statuses]})
    else:
        _print_table(statuses)
    return EXIT_OK


def cmd_service_show(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        status = group.get(args.id, down_time=args.down_time)
    data = status.as_dict()
    if args.format == "json":
        _print_json(data)
    else:
        width = max(len(key) for key in data) + 1
        for key, value in data.items():
            print(f"{key + ':':<{width}} {_cell(value)}")
    return EXIT_OK


def cmd_service_enable(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        svc = group.set_disabled(args.id, False)
    print(f"enabled {svc.binary} on {svc.host} ({svc.uuid})")
    return EXIT_OK


def cmd_service_disable(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        svc = group.set_disabled(args.id, True, args.reason)
    print(f"disabled {svc.binary} on {svc.host} ({svc.uuid})")
    return EXIT_OK


def cmd_service_force_down(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        svc = group.set_forced_down(args.id, not args.unset)
    what = "cleared forced_down of" if args.unset else "forced down"
    print(f"{what} {svc.binary} on {svc.host} ({svc.uuid})")
    return EXIT_OK


def cmd_service_delete(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        svc = group.get(args.id).service
        group.delete(svc)
    print(f"deleted {svc.binary} on {svc.host} ({svc.uuid})")
    return EXIT_OK


def cmd_events(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    """Page through the stream; with --follow, long-poll for more (JSON: one line per event)."""
    with _group(conf) as group:
        cursor, shown = args.since, []
        while True:
            wait = 1.0 if args.follow else 0.0
            batch = group.events(since=cursor, binary=args.binary, host=args.host, wait=wait)
            cursor = batch.cursor
            rows = [e.as_dict() for e in batch.events]
            if args.format == "json" and args.follow:
                for row in rows:
                    print(json.dumps(row), flush=True)
            elif args.follow:
                for row in rows:
                    print(_event_line(row), flush=True)
            else:
                shown += rows
                if not rows:
                    break
    if args.format == "json":
        _print_json({"events": shown, "cursor": cursor or 0})
    else:
        for row in shown:
            print(_event_line(row))
    return EXIT_OK


def _event_line(row: dict[str, Any]) -> str:
    return (
        f"{row['id']}  {row['time']}  {row['binary']}  {row['host']}  "
        f"{row['previous'] or '-'} -> {row['state']}  {row['cause']}  {row['service_id']}"
    )


CLAIM_COLUMNS = (
    "resource_type",
    "resource_id",
    "operation",
    "state",
    "epoch",
    "owner_host",
    "owner_binary",
    "claimed_at",
    "reason",
)


def cmd_claim_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        found = group.list_claims(
            owner=args.owner, resource_type=args.resource_type, state=args.state
        )
    rows = [c.as_dict() for c in found]
    if args.format == "json":
        _print_json({"claims": rows})
        return EXIT_OK
    header = [c.removeprefix("resource_") for c in CLAIM_COLUMNS]
    cells = [[_cell(row[c]) for c in CLAIM_COLUMNS] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
    for line in [header, *cells]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_claim_show(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        data = group.get_claim(args.resource_type, args.resource_id).as_dict()
    if args.format == "json":
        _print_json(data)
    else:
        width = max(len(key) for key in data) + 1
        for key, value in data.items():
            shown = json.dumps(value) if isinstance(value, dict) else _cell(value)
            print(f"{key + ':':<{width}} {shown}")
    return EXIT_OK


def cmd_claim_release(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    """Fenced: releases only if the claim is still held at --epoch (ClaimLost otherwise)."""
    from dataclasses import replace

    with _group(conf) as group:
        current = group.get_claim(args.resource_type, args.resource_id)
        mine = replace(current, epoch=args.epoch)
        done = group.release(mine, incarnation=current.incarnation)
    print(f"released {done.resource_type} {done.resource_id} at epoch {done.epoch}")
    return EXIT_OK


def cmd_claim_force_release(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        done = group.force_release(args.resource_type, args.resource_id, args.reason)
    print(f"force-released {done.resource_type} {done.resource_id}; epoch now {done.epoch}")
    return EXIT_OK


def cmd_version(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    with _group(conf) as group:
        if args.version_command == "min":
            value = group.get_min_version(args.binary, up_only=args.up_only)
        else:
            value = group.get_max_version(args.binary, up_only=args.up_only)
    print("none" if value is None else value)
    return EXIT_OK


# -- helpers -------------------------------------------------------------------


@contextlib.contextmanager
def _group(conf: cfg.ConfigOpts) -> Iterator[Any]:
    # Imported here so that `--help` and usage errors stay fast and cannot fail
    # on a broken driver or database library.
    from servicegroup.api import ServiceGroup

    with ServiceGroup(conf) as group:
        yield group


@contextlib.contextmanager
def _engine(conf: cfg.ConfigOpts) -> Iterator[Any]:
    from servicegroup.backend_errors import sql_errors
    from servicegroup.db.engine import make_engine

    engine = make_engine(
        sg_conf.database_url(conf),
        connect_timeout=conf.database.connect_timeout,
        pool_size=conf.database.pool_size,
    )
    try:
        with sql_errors():
            yield engine
    finally:
        engine.dispose()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _print_table(statuses: Sequence[ServiceStatus], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = [[_cell(s.as_dict()[key]) for _, key in TABLE_COLUMNS] for s in statuses]
    header = [title for title, _ in TABLE_COLUMNS]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _make_conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    """Hand the config options to oslo.config, which owns their meaning.

    The defaults are searched for with prog fixed to 'servicegroup', so they do
    not depend on how the program was started (argv[0] is 'pytest' in tests).
    """
    files = [*args.config_file, *args.late_config_file]
    dirs = [*args.config_dir, *args.late_config_dir]
    oslo_args: list[str] = []
    for path in files:
        oslo_args += ["--config-file", path]
    for path in dirs:
        oslo_args += ["--config-dir", path]
    defaults = cfg.find_config_files(project=PROJECT, prog=PROG)
    return sg_conf.make_conf(oslo_args, config_files=defaults)


@contextlib.contextmanager
def _logging(level: int, fmt: str) -> Iterator[None]:
    """Log to stderr for the duration of one main() call, then put things back.

    main() may run many times in one process (tests, embedding), so it must
    not pile up handlers on the root logger.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call, captured or not
    handler.setFormatter(logging.Formatter(fmt))
    # stevedore logs an ERROR for every plugin it fails to import while merely
    # listing driver names; the unknown-driver error already says what exists.
    # httpx logs every request at INFO: one line per heartbeat of `agent`.
    quiet = {
        logging.getLogger("stevedore"): logging.CRITICAL,
        logging.getLogger("httpx"): logging.WARNING,
        # keystoneauth says at WARNING that it falls back from version discovery
        # to the URL's own /v3; the failures that matter reach us as exceptions.
        logging.getLogger("keystoneauth"): logging.ERROR,
        # The schema check at start-up logs its migration context at INFO.
        logging.getLogger("alembic"): logging.WARNING,
    }
    old_levels = {logger: logger.level for logger in [root, *quiet]}
    root.addHandler(handler)
    root.setLevel(level)
    if level > logging.DEBUG:
        for logger, quiet_level in quiet.items():
            logger.setLevel(quiet_level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, old in old_levels.items():
            logger.setLevel(old)


def _classify(exc: Exception) -> tuple[int, str] | None:
    for cls, code, prefix in _EXIT_CODES:
        if isinstance(exc, cls):
            return code, prefix
    return None


def _error(message: str) -> None:
    # Keep it one line whatever the exception text holds (driver errors can be multi-line).
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code; never raises, so no traceback leaks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        debug = args.debug or args.late_debug
        serving = args.func in (cmd_serve, cmd_agent, cmd_keystone_token)
        if debug:
            level, fmt = logging.DEBUG, "%(levelname)s %(name)s: %(message)s"
        elif serving:
            # A daemon under systemd: the journal adds time and unit, we add the rest.
            level, fmt = logging.INFO, "%(levelname)s %(name)s: %(message)s"
        else:
            level, fmt = logging.WARNING, f"{PROG}: %(levelname)s: %(message)s"
        with _logging(level, fmt):
            conf = _make_conf(args)
            return int(args.func(conf, args))
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `servicegroup service list | head`: the reader left; not an error worth a word.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:
        known = _classify(exc)
        if debug and (known is None or known[0] != EXIT_USAGE):
            traceback.print_exc()
        if known is None:
            _error(f"internal error: {type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        code, prefix = known
        _error(f"{prefix}{exc}")
        return code
