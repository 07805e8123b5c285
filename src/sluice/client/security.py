"""The client's side of TLS and authentication: how it connects, and which failures end it.

A failure no retry can fix stops the client at once with a clear message instead of
reconnecting until ``--give-up-after``: the server's certificate is not trusted, names
another host or has expired; the server refused our certificate; one side speaks TLS and
the other does not; or the server refused our token (``auth_failed``).

A plain-text client cannot tell a TLS port from a server that closed on it (a TLS server
just closes), so that case stays a retried ``refused`` whose warning suggests ``--tls``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Optional, Union

from .. import tls
from ..errors import ProtocolError, TlsError
from ..protocol import ErrorCode

__all__ = ["Credentials", "fatal_failure"]

@dataclass(frozen=True)
class Credentials:
    """TLS context, the name to verify, and the token for ``hello``; all optional."""

    context: Optional[ssl.SSLContext] = None
    server_name: Optional[str] = None
    token: Optional[str] = None

    def connect_options(self) -> dict[str, Any]:
        if self.context is None:
            return {}
        options: dict[str, Any] = {"ssl": self.context}
        if self.server_name:
            options["server_hostname"] = self.server_name
        return options


def fatal_failure(
    exc: BaseException, target: str, credentials: Credentials
) -> Optional[Union[TlsError, ProtocolError]]:
    """The error that should stop the client for good, or None when a retry may help."""
    if isinstance(exc, ProtocolError):
        return exc if exc.code == ErrorCode.AUTH_FAILED else None
    if credentials.context is None:
        return None
    return tls.is_fatal(exc, target)
