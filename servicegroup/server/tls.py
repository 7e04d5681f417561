"""The daemon's TLS: `[api] ssl_*` checked before listening, then handed to uvicorn.

uvicorn builds its SSLContext only in the process that serves, after the
port is bound: with `[api] workers` in each forked worker, where a file it
cannot load ends every worker in a traceback. So the whole configuration is
loaded here first, once, by the same calls uvicorn makes, and each mistake
is one ConfigError naming the option and the file, before anything listens.

Usage::

    tls = ServerTls.from_conf(conf)             # raises ConfigError
    uvicorn.Config(app, **tls.uvicorn_options())
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from servicegroup import pem
from servicegroup.exceptions import ConfigError

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

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config's keyword arguments for this TLS; none when TLS is off."""
        if not self.enabled:
            return {}
        return {
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_ca_certs": self.ca_file,
            "ssl_cert_reqs": VERIFY_MODES[self.client_cert],
        }
