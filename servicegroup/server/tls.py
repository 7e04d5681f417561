"""The daemon's TLS: `[api] ssl_*` checked before listening, handed to uvicorn, renewed live.

uvicorn builds its SSLContext only in the process that serves, after the
port is bound: with `[api] workers` in each forked worker, where a file it
cannot load ends every worker in a traceback. So the whole configuration is
loaded here first, once, by the same calls uvicorn makes, and each mistake
is one ConfigError naming the option and the file, before anything listens.

Certificates are renewed every few weeks (ACME, cert-manager, an internal
CA), and a renewal must not take a restart. uvicorn hands each process's
context to its ssl_context_factory (public since uvicorn 0.47), which keeps
it (LiveContext) and hooks its SNI callback; CertReloader, a source of the
daemon's file watcher (file_watch.py: SIGHUP, or a changed stat), builds a
new context from the renewed files, which that callback hands each new
handshake. A connection already open keeps the one it has. A renewed set is
first loaded whole into a scratch context, with every check of a start: a
set that fails (the key of another certificate, a file caught half-written,
unreadable, empty) is refused with one line naming the option and the
file, and the certificate loaded before is served on.

Usage::

    tls = ServerTls.from_conf(conf)             # raises ConfigError
    live = LiveContext()
    config = uvicorn.Config(app, **tls.uvicorn_options(live))
    config.load()                               # live.context: what uvicorn serves with
    FileWatcher([CertReloader(tls, live)])
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from servicegroup import pem
from servicegroup.exceptions import ConfigError

if TYPE_CHECKING:
    import uvicorn

LOG = logging.getLogger(__name__)

# [api] ssl_client_cert -> what the server asks of a client's certificate.
VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class ServerTls:
    """The four options, consistent with each other and loadable, or TLS off (no certfile)."""

    certfile: str | None = None
    keyfile: str | None = None
    ca_file: str | None = None
    client_cert: str = "none"

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> ServerTls:
        api = conf.api
        tls = cls(
            certfile=api.ssl_certfile or None,
            keyfile=api.ssl_keyfile or None,
            ca_file=api.ssl_ca_file or None,
            client_cert=api.ssl_client_cert,
        )
        tls.check()
        return tls

    @property
    def enabled(self) -> bool:
        return self.certfile is not None

    def check(self) -> None:
        """Raise ConfigError unless uvicorn can serve exactly what the options say."""
        self._check_consistent()
        if self.enabled:
            self.context()

    def _check_consistent(self) -> None:
        if self.certfile and not self.keyfile:
            raise ConfigError(
                "[api] ssl_certfile is set but ssl_keyfile is not: serving TLS needs the "
                "certificate's private key too"
            )
        if self.keyfile and not self.certfile:
            raise ConfigError(
                "[api] ssl_keyfile is set but ssl_certfile is not: serving TLS needs the "
                "certificate too"
            )
        mutual = self.client_cert != "none"
        if mutual and not self.ca_file:
            raise ConfigError(
                f"[api] ssl_client_cert = {self.client_cert} needs ssl_ca_file: the CA "
                "certificates that client certificates must be signed by"
            )
        if self.ca_file and not mutual:
            raise ConfigError(
                "[api] ssl_ca_file is set but ssl_client_cert = none, so no client would be "
                "asked for a certificate: set ssl_client_cert = optional or required, or "
                "remove ssl_ca_file"
            )
        if mutual and not self.enabled:
            raise ConfigError(
                f"[api] ssl_client_cert = {self.client_cert} needs ssl_certfile and "
                "ssl_keyfile: mutual TLS is TLS first"
            )

    @property
    def paths(self) -> list[str]:
        """The files the daemon serves TLS from."""
        return [path for path in (self.certfile, self.keyfile, self.ca_file) if path]

    def context(self) -> ssl.SSLContext:
        """What uvicorn.config.create_ssl_context builds from uvicorn_options(), checked."""
        assert self.certfile is not None and self.keyfile is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pem.load_chain(
            context,
            self.certfile,
            self.keyfile,
            cert_option="[api] ssl_certfile",
            key_option="[api] ssl_keyfile",
        )
        context.verify_mode = VERIFY_MODES[self.client_cert]
        if self.ca_file is not None:
            pem.check_cas(self.ca_file, option="[api] ssl_ca_file")
            context.load_verify_locations(self.ca_file)
        return context

    def uvicorn_options(self, live: LiveContext) -> dict[str, Any]:
        """uvicorn.Config's keyword arguments for this TLS; none when TLS is off.

        uvicorn still builds the context from the files (its ALPN and cipher
        choices included); `live` only keeps it, to load renewals into.
        """
        if not self.enabled:
            return {}
        return {
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_ca_certs": self.ca_file,
            "ssl_cert_reqs": VERIFY_MODES[self.client_cert],
            "ssl_context_factory": live.factory,
        }


class LiveContext:
    """The SSLContext uvicorn serves with, and the one each new handshake is switched to.

    uvicorn's context stays the one its server holds; its SNI callback, which
    OpenSSL runs early in every handshake (with or without a server name),
    moves the connection to `current`. A renewal builds a whole new context
    and swaps that one reference: no context already in use is changed, from
    the watcher's thread, while the event loop makes connections from it
    (CPython lets go of the GIL inside load_cert_chain, between the
    certificate and its key), and the new one's CAs replace the old ones
    instead of adding to them. A connection keeps the context it started on.
    """

    def __init__(self) -> None:
        self.context: ssl.SSLContext | None = None  # uvicorn's
        self.current: ssl.SSLContext | None = None  # what new handshakes get
        self._build: Callable[[], ssl.SSLContext] | None = None

    def factory(
        self, _config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        """uvicorn's ssl_context_factory: its own context, kept, with our callback."""
        self._build = default  # uvicorn's own making (ALPN, ciphers), from the files now
        self.context = self.current = default()
        self.context.sni_callback = self._switch
        return self.context

    def _switch(
        self, connection: ssl.SSLObject, _name: str | None, started: ssl.SSLContext
    ) -> None:
        current = self.current  # read once: a renewal may swap it meanwhile
        if current is not None and current is not started:
            connection.context = current

    def renew(self) -> None:
        """Build a new context from the files, as uvicorn did, and serve it to new handshakes.

        Raises ssl.SSLError or OSError if the files do not load; `current` is
        then unchanged.
        """
        assert self._build is not None, "uvicorn.Config.load() has not run"
        fresh = self._build()
        self.current = fresh  # the swap: one reference, read once per handshake


def _contents(paths: list[str]) -> bytes | None:
    """A digest of the files as they are now; None when one cannot be read."""
    digest = hashlib.sha256()
    try:
        for path in paths:
            with open(path, "rb") as file:
                digest.update(hashlib.sha256(file.read()).digest())
    except OSError:
        return None
    return digest.digest()


def fingerprint(certfile: str) -> str:
    """The SHA-256 fingerprint of the first certificate in `certfile` (the served one), as
    `openssl x509 -noout -fingerprint -sha256` prints it; "?" when it cannot be read."""
    try:
        with open(certfile, encoding="ascii", errors="replace") as file:
            text = file.read()
        end = text.index(ssl.PEM_FOOTER) + len(ssl.PEM_FOOTER)
        der = ssl.PEM_cert_to_DER_cert(text[text.index(ssl.PEM_HEADER) : end])
    except (OSError, ValueError):
        return "?"
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


class CertReloader:
    """The TLS files as a file_watch.Reloadable: renewed files served to new handshakes.

    All or nothing, as a token reload: the set is loaded into a scratch
    context first, with every check of a start (pem.py: no passphrase
    prompt, the option and the file named), and only a set that loads whole
    is served (LiveContext.renew).
    """

    def __init__(self, tls: ServerTls, live: LiveContext) -> None:
        self._tls = tls
        self._live = live
        self.paths = tls.paths
        # What uvicorn loaded a moment ago: a SIGHUP or a touch with no new content
        # reloads nothing.
        self._loaded = _contents(self.paths)

    def reload(self, why: str) -> bool:
        """Serve the files to new handshakes when they changed and load whole."""
        contents = _contents(self.paths)
        if contents is not None and contents == self._loaded:
            LOG.debug("TLS reload (%s): no file changed", why)
            return False
        try:
            self._tls.check()
        except ConfigError as exc:
            LOG.error(
                "TLS reload (%s) refused, the certificate loaded before is served on: %s",
                why,
                exc,
            )
            return False
        try:
            self._live.renew()
        except (ssl.SSLError, OSError) as exc:
            # Replaced again between the check and the load: the watcher's next look
            # sees a new stamp and loads the files as they are then.
            LOG.error(
                "TLS reload (%s) refused, the certificate loaded before is served on: "
                "a file changed while it was read: %s",
                why,
                exc,
            )
            return False
        self._loaded = contents
        assert self._tls.certfile is not None
        LOG.info(
            "TLS reload (%s): new connections get %s (SHA-256 %s)",
            why,
            self._tls.certfile,
            fingerprint(self._tls.certfile),
        )
        return True
