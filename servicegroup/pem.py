"""PEM certificates, keys and CA bundles into an ssl.SSLContext, with errors an operator reads.

OpenSSL answers "PEM lib" whichever file is wrong, and prompts on the
terminal for the passphrase of an encrypted key, which a daemon or an agent
under systemd cannot type. Every loader here raises ConfigError naming the
option and the file instead. The daemon (server/tls.py) and the HTTP client
(client_context) load their files through it.
"""

from __future__ import annotations

import ssl

import httpx

from servicegroup.exceptions import ConfigError


class _EncryptedKey(Exception):
    """Raised from the passphrase callback, so OpenSSL never prompts."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def check_readable(option: str, path: str) -> None:
    """ConfigError unless `path` can be opened and is not empty."""
    try:
        with open(path, "rb") as file:
            empty = not file.read(1)
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{option}: cannot read {path}: {why}") from None
    if empty:
        raise ConfigError(f"{option}: {path} is empty")


def load_chain(
    context: ssl.SSLContext,
    cert: str,
    key: str | None,
    *,
    cert_option: str,
    key_option: str,
) -> None:
    """A certificate (and its intermediates) and its unencrypted key; `key` None: in `cert`."""
    check_readable(cert_option, cert)
    if key is not None:
        check_readable(key_option, key)
    try:
        context.load_cert_chain(cert, key, _no_passphrase)
    except _EncryptedKey:
        raise ConfigError(
            f"{key_option} {key or cert}: the key is encrypted, and no passphrase can be "
            "given; decrypt it (openssl pkey -in KEY -out PLAIN) and protect it by its mode"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{key_option} {key or cert} is not the private key of {cert_option} {cert}"
            ) from None
        if not _holds_certificates(cert):
            raise ConfigError(f"{cert_option} {cert}: not a PEM certificate") from None
        raise ConfigError(f"{key_option} {key or cert}: not a PEM private key") from None


def check_cas(path: str, *, option: str) -> None:
    """ConfigError unless `path` is a PEM bundle of CA certificates that OpenSSL loads."""
    check_readable(option, path)
    if not _holds_certificates(path):
        raise ConfigError(f"{option} {path}: not a PEM bundle of CA certificates")


def _holds_certificates(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(path)
    except (ssl.SSLError, OSError):
        return False
    return True


def client_context(
    ca_file: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """How a client checks an https:// daemon and, for mutual TLS, shows itself.

    Without `ca_file` the daemon must have a certificate from the default
    bundle, httpx's ($SSL_CERT_FILE, else certifi's). Files are read now, so
    a wrong one fails at once, named, not at every request as an
    unreachable daemon.
    """
    if key is not None and cert is None:
        raise ConfigError("client key: needs the client certificate it belongs to")
    if ca_file is None:
        context = httpx.create_ssl_context()
    else:
        check_cas(ca_file, option="CA file")
        context = ssl.create_default_context(cafile=ca_file)
    if cert is not None:
        load_chain(context, cert, key, cert_option="client certificate", key_option="client key")
    return context
