"""TLS contexts for the ingest hop, and plain-language reasons for TLS failures.

TLS wraps wire protocol v1 unchanged: the same frames flow inside the encrypted stream.
Both sides require TLS 1.2 or newer. A server context with a client CA asks for a client
certificate and verifies any presented against that CA (a bad one fails the handshake); a
client *without* one completes TLS and is then refused by the server with an ``auth_failed``
error frame, unless it has a token (see ``server/access.py``). Enforcing it there rather
than in the handshake lets the client read why it was refused: with TLS 1.3 a client learns
of a handshake-level refusal only as a closed connection.

A client verifies the server's certificate against ``ca_file`` (or the system's trust
store) and its name against ``server_name`` (default: the host it connects to). Failures
that a retry cannot fix (an unknown CA, a wrong name, an expired certificate, a server
that does not speak TLS, a client certificate the server refused) become
:class:`~sluice.errors.TlsError` with a message saying which it was.
"""

from __future__ import annotations

import ssl
from typing import Optional

from .errors import ConfigError, TlsError

__all__ = ["client_context", "describe_failure", "is_fatal", "server_context"]

# OpenSSL X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code carries them.
_EXPIRED = 10
_NOT_YET_VALID = 9
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64

# ssl.SSLError.reason values meaning the peer refused us, or does not speak TLS at all.
_PEER_REFUSED_US = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate (--cert/--key)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused our client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the CA of our client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says our client certificate has expired",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the server refused our TLS version",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (a plain-text port?)",
    "PACKET_LENGTH_TOO_LONG": "the peer does not speak TLS (a plain-text port?)",
    "RECORD_LAYER_FAILURE": "the peer does not speak TLS (a plain-text port?)",
}


def _load_chain(context: ssl.SSLContext, cert: str, key: Optional[str], what: str) -> None:
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what}: cannot load certificate {cert!r} / key {key!r}: {exc}") from exc


def server_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """A server context; with ``client_ca``, client certificates are verified against it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "--tls-cert/--tls-key")
    if client_ca:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-client-ca: cannot load {client_ca!r}: {exc}") from exc
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(ca_file: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """A client context that verifies the server (``ca_file`` or the system's CAs)."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--ca-file: cannot load {ca_file!r}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        _load_chain(context, cert, key, "--cert/--key")
    return context


def describe_failure(exc: BaseException, target: str = "the server") -> Optional[str]:
    """What went wrong, for a TLS failure no retry can fix; None for anything else."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message or str(exc)
        if code == _EXPIRED:
            return f"the certificate of {target} has expired ({detail})"
        if code == _NOT_YET_VALID:
            return f"the certificate of {target} is not yet valid ({detail})"
        if code in _UNKNOWN_CA:
            return (f"the certificate of {target} is signed by an unknown CA ({detail}); "
                    "pass the CA that signed it with --ca-file")
        if code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
            return (f"the certificate of {target} is not valid for the name connected to "
                    f"({detail}); connect by a name it lists or set --server-name")
        return f"the certificate of {target} failed verification: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        if reason in _PEER_REFUSED_US:
            return f"TLS with {target} failed: {_PEER_REFUSED_US[reason]} ({reason})"
    return None


def is_fatal(exc: BaseException, target: str = "the server") -> Optional[TlsError]:
    """A :class:`TlsError` for failures a retry cannot fix; None otherwise."""
    message = describe_failure(exc, target)
    return TlsError(message) if message is not None else None
