"""Who may stream to this server, and which kinds: the ingest side of authentication.

A client proves who it is with a verified client certificate (when the server has
``--tls-client-ca``; TLS verifies a presented certificate, this module refuses a client
that presented none, with a reason it can read) or with a token in ``hello`` (when the
server has ``--token-file``). With neither setting the server is open,
as in protocol v1, and a token in ``hello`` is ignored.

With a token file:

- a valid token admits the client with the kinds its entry lists (``ingest:<kind>``);
- a token that is wrong or revoked is ``auth_failed``, certificate or not;
- no token is ``auth_failed``, unless a verified client certificate admits it (all kinds;
  restrict a certificate holder's kinds by giving it a token instead);
- a batch of a kind the entry does not list is nacked ``forbidden``;
- when the token file changes, each connection checks that its token is still listed at
  its next batch, and ends with ``auth_failed`` if it was removed (revocation).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

from ..auth import Principal, TokenFile
from ..errors import ProtocolError
from ..protocol import ErrorCode

__all__ = ["Grant", "IngestAccess", "certificate_name"]

_ALL_KINDS = frozenset({"ingest:*"})


def certificate_name(peercert: Any) -> Optional[str]:
    """The subject common name of a verified peer certificate (``getpeercert()``), if any."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "client-certificate"


@dataclass
class Grant:
    """What one connection was admitted as; re-checked when the token file changes."""

    principal: Principal
    tokens: Optional[TokenFile] = None
    digest: str = ""
    generation: int = 0

    def allows(self, kind: str) -> bool:
        """May this connection send ``kind``? Raises ``auth_failed`` if its token was revoked."""
        tokens = self.tokens
        if tokens is not None:
            tokens.refresh()
            if tokens.generation != self.generation:
                principal = tokens.lookup_digest(self.digest)
                if principal is None:
                    raise ProtocolError(ErrorCode.AUTH_FAILED,
                                        "this connection's token was revoked; reconnect with a valid one")
                self.principal = principal
                self.generation = tokens.generation
        return self.principal.may_ingest(kind)


class IngestAccess:
    def __init__(self, tokens: Optional[TokenFile], client_certificates: bool) -> None:
        self.tokens = tokens
        self.client_certificates = client_certificates

    @property
    def required(self) -> bool:
        return self.tokens is not None or self.client_certificates

    def admit(self, token: Optional[str], peercert: Any) -> Optional[Grant]:
        """The connection's grant (None when the server is open); raises ``auth_failed``."""
        if not self.required:
            return None
        tokens = self.tokens
        if tokens is not None and token is not None:
            principal = tokens.lookup(token)
            if principal is None:
                raise ProtocolError(ErrorCode.AUTH_FAILED, "hello.token is not valid (unknown or revoked)")
            digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
            return Grant(principal, tokens, digest, tokens.generation)
        name = certificate_name(peercert) if self.client_certificates else None
        if name is not None:
            return Grant(Principal(f"cert:{name}", _ALL_KINDS))
        if tokens is None:
            raise ProtocolError(ErrorCode.AUTH_FAILED,
                                "this server requires a client certificate (--cert/--key)")
        raise ProtocolError(ErrorCode.AUTH_FAILED,
                            "this server requires authentication: a token in hello (--token)"
                            + (" or a client certificate (--cert/--key)" if self.client_certificates else ""))
