"""OpenStack credentials as a keystoneauth1 Session, for the clients of a keystone daemon.

Under `[api] auth_strategy = keystone` the daemon wants a Keystone token,
and a token expires (after an hour, by Keystone's default). A client handed
one token stops working then; a client holding the credentials in a
keystoneauth1 Session does not, because keystoneauth signs in, keeps the
token, and signs in again shortly before it expires. No token logic of our
own: keystoneauth's plugins, option names and renewal are what every
OpenStack client uses, so `--os-auth-url`, `--os-username`, ... and an
openrc's OS_* variables mean here what they mean to `openstack`.

This module is the one place the client side meets keystoneauth (its import
costs some 0.3 s, so the commands that do not need it never load it):
add_credential_arguments() and session_from_arguments() for a command line,
KeystoneSessionAuth for the HTTP client, keystone_errors() for its
exceptions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import httpx
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1 import loading, plugin, session

from servicegroup import pem
from servicegroup.exceptions import BackendError, InvalidInput, ServiceGroupError, Unauthorized

KEYSTONE = "keystone"
# keystoneauth's own default: what `openstack` signs in with unless told otherwise.
DEFAULT_AUTH_TYPE = "password"
# TLS towards Keystone, under the names and variables of the OpenStack clients.
SESSION_OPTIONS = (
    ("--os-cacert", "OS_CACERT", "CA bundle that Keystone's certificate must be signed by"),
    ("--os-cert", "OS_CERT", "client certificate to show Keystone (mutual TLS)"),
    ("--os-key", "OS_KEY", "key of --os-cert, unless that file holds it too"),
)


def add_credential_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """keystoneauth's --os-auth-type and that auth type's options, plus --os-cacert and co.

    `argv` is the command's arguments: keystoneauth reads --os-auth-type (or
    $OS_AUTH_TYPE, default password) from it to know which options to add. An
    unknown auth type adds none; session_from_arguments() then says so.
    """
    with contextlib.suppress(ksa_exc.NoMatchingPlugin):
        loading.register_auth_argparse_arguments(parser, list(argv), default=DEFAULT_AUTH_TYPE)
    group = parser.add_argument_group("Keystone TLS")
    for flag, env, help in SESSION_OPTIONS:
        group.add_argument(
            flag, metavar="PEM", default=os.environ.get(env), help=f"{help} (default ${env})"
        )


def session_from_arguments(args: argparse.Namespace, timeout: float) -> session.Session:
    """A Session that signs in with the parsed credentials; InvalidInput names what is missing.

    Nothing is sent to Keystone yet: the first token is fetched by the first
    request that needs one. `timeout` bounds each request to Keystone, so an
    unresponsive Keystone is an outage, not a hang.
    """
    name = args.os_auth_type
    try:
        loader: loading.BaseLoader[Any] = loading.get_plugin_loader(name)
    except ksa_exc.NoMatchingPlugin:
        known = ", ".join(sorted(loading.get_available_plugin_names()))
        raise InvalidInput(
            "--os-auth-type", f"unknown auth type {name!r}; known: {known}"
        ) from None
    flags = {opt.dest: _flag(opt) for opt in loader.get_options()}
    given = {dest for dest in flags if getattr(args, f"os_{dest}", None)}
    _check_identity(flags, given)
    try:
        auth = loading.load_auth_from_argparse_arguments(args)
    except ksa_exc.MissingRequiredOptions as exc:
        raise InvalidInput(_flag(exc.options[0]), "is required") from None
    except ksa_exc.OptionError as exc:
        raise InvalidInput(f"--os-auth-type {name}", str(exc)) from None
    return session.Session(
        auth=auth, verify=_verify(args), cert=_client_cert(args), timeout=timeout
    )


def _verify(args: argparse.Namespace) -> str | bool:
    """--os-cacert, checked now: requests would fail at the first sign-in, as an outage."""
    if not args.os_cacert:
        return True
    pem.check_cas(args.os_cacert, option="--os-cacert ($OS_CACERT)")
    return str(args.os_cacert)


def _client_cert(args: argparse.Namespace) -> str | tuple[str, str] | None:
    if args.os_key and not args.os_cert:
        raise InvalidInput("--os-key ($OS_KEY)", "only applies with --os-cert")
    if not args.os_cert:
        return None
    pem.check_readable("--os-cert ($OS_CERT)", args.os_cert)
    if not args.os_key:
        return str(args.os_cert)
    pem.check_readable("--os-key ($OS_KEY)", args.os_key)
    return (str(args.os_cert), str(args.os_key))


def _check_identity(flags: dict[str, str], given: set[str]) -> None:
    """What a password sign-in needs and keystoneauth only finds out at Keystone, or never.

    Without these keystoneauth fails later with "password is a required
    attribute", or Keystone with a 401 that names nothing; and a token scoped
    to no project is one the daemon refuses (it accepts one project's).
    """

    def need(*alternatives: str, because: str = "") -> None:
        present = [dest for dest in alternatives if dest in flags]
        if present and not given.intersection(present):
            others = " or ".join(flags[dest] for dest in present[1:])
            rule = "is required" + (f" (or {others})" if others else "") + because
            raise InvalidInput(flags[present[0]], rule)

    need("auth_url")
    if "application_credential_secret" in flags:
        need("application_credential_secret")
        need("application_credential_id", "application_credential_name")
    if "password" not in flags:
        return  # another way of signing in: keystoneauth and Keystone judge it
    need("password")
    need("username", "user_id")
    if "username" in given:
        need(
            "user_domain_name",
            "user_domain_id",
            "default_domain_name",
            "default_domain_id",
            because=" with --os-username: a user name is unique only within its domain",
        )
    need(
        "project_name",
        "project_id",
        "trust_id",
        because=": the daemon accepts tokens scoped to its fleet's project",
    )
    if "project_name" in given:
        need(
            "project_domain_name",
            "project_domain_id",
            "default_domain_name",
            "default_domain_id",
            because=" with --os-project-name: a project name is unique only within its domain",
        )


def _flag(opt: loading.Opt) -> str:
    """An option as the user gives it: `--os-auth-url ($OS_AUTH_URL)`."""
    return f"{opt.argparse_args[0]} (${opt.argparse_envvars[0]})"


def as_session(keystone: session.Session | plugin.BaseAuthPlugin) -> session.Session:
    """The Session to take tokens from: the one given, or one around an auth plugin."""
    if isinstance(keystone, plugin.BaseAuthPlugin):
        keystone = session.Session(auth=keystone)
    if not isinstance(keystone, session.Session):
        raise InvalidInput("keystone_session", "must be a keystoneauth1 Session or auth plugin")
    if keystone.auth is None:
        raise InvalidInput("keystone_session", "must have an auth plugin to sign in with")
    return keystone


@contextlib.contextmanager
def keystone_errors(where: str) -> Iterator[None]:
    """keystoneauth's exceptions as the ones the rest of servicegroup handles.

    Keystone unreachable or failing is an outage (BackendError: the agent and
    the reporters retry it); Keystone refusing the credentials is Unauthorized
    (retrying will not fix a wrong password). `where` is Keystone's address.
    """
    try:
        yield
    except (ksa_exc.ConnectionError, ksa_exc.DiscoveryFailure) as exc:
        raise BackendError(KEYSTONE, f"{where}: {exc}") from None
    except ksa_exc.HttpError as exc:
        status = exc.http_status or 0
        if status >= 500:
            raise BackendError(KEYSTONE, f"{where}: HTTP {status}: {exc.message}") from None
        raise Unauthorized(
            f"Keystone at {where} refused the credentials (HTTP {status}): {exc.message}",
            challenge="Keystone",
        ) from None
    except ksa_exc.ClientException as exc:
        raise ServiceGroupError(f"Keystone at {where}: {exc}") from None


def auth_url(keystone: session.Session) -> str:
    """Keystone's address for messages: the plugin's auth_url, when it has one."""
    return str(getattr(keystone.auth, "auth_url", None) or "Keystone")


class KeystoneSessionAuth(httpx.Auth):
    """Each request's X-Auth-Token from a keystoneauth Session; a refused one renewed once.

    keystoneauth renews a token that is about to expire by itself; what it
    cannot know is that Keystone revoked one early, or that the daemon judges
    expiry by another clock. So a 401 from the daemon drops the session's
    token, and the request is sent once more with a new one; a second 401
    is the answer. Concurrent requests refused with the same token share one
    renewal.
    """

    def __init__(self, keystone: session.Session | plugin.BaseAuthPlugin) -> None:
        self.session = as_session(keystone)
        self.where = auth_url(self.session)
        self._renewing = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self._headers()
        request.headers.update(sent)
        response = yield request
        if response.status_code != 401:
            return
        renewed = self._renew(sent)
        if renewed != sent:  # a fixed token (no renewal possible) is not sent twice
            request.headers.update(renewed)
            yield request

    def _headers(self) -> dict[str, str]:
        with keystone_errors(self.where):
            headers: dict[str, Any] | None = self.session.get_auth_headers()
        return {str(key): str(value) for key, value in (headers or {}).items()}

    def _renew(self, refused: dict[str, str]) -> dict[str, str]:
        with self._renewing:
            current = self._headers()
            if current == refused:  # no other request renewed it meanwhile
                self.session.invalidate()
                current = self._headers()
            return current
