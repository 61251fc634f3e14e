"""The server's TLS context, built once from ``[tls]`` at start-up.

TLS 1.2 is offered only with ECDHE key exchange and AEAD ciphers (forward
secrecy, no CBC, no RSA key transport); TLS 1.3 suites are all AEAD already.
Compression (CRIME) and renegotiation (client-initiated DoS, CVE-2009-3555
class) are off. With ``client_ca_file`` every client must present a
certificate chaining to it, or the handshake fails before any HTTP is read.
"""

from __future__ import annotations

import ssl

from broker.config import TLSSettings
from broker.errors import ConfigError

__all__ = ["TLS12_CIPHERS", "server_context"]

# OpenSSL names; TLS 1.3 suites are configured separately and are AEAD by definition.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384:!PSK:!SRP"
# The "+" terms only pick AEAD suites; the exclusions drop any CBC suite a future
# OpenSSL might file under the same key exchange (CBC suites name a MAC hash).

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(tls: TLSSettings) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for the listening socket.

    Raises:
        ConfigError: TLS is not configured, or a certificate, key or CA file
            cannot be read or does not match (the message names the setting).
    """
    if not tls.enabled:
        raise ConfigError("tls.cert_file: not set")
    if tls.min_version not in _VERSIONS:
        raise ConfigError("tls.min_version: must be '1.2' or '1.3'")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_NO_TICKET  # tickets would be sealed under a key that lives as long as the process
    )
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.cert_file/tls.key_file: cannot load ({_reason(exc)})") from None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.client_ca_file: cannot load ({_reason(exc)})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _reason(exc: OSError | ssl.SSLError) -> str:
    # Never the key's bytes: OpenSSL reasons and strerror name the failure only.
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return exc.strerror or type(exc).__name__
