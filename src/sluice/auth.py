"""Token authentication for ingest clients and API users, from a file of hashed tokens.

A token is a random secret made by ``sluice token new`` (32 random bytes, URL-safe base64).
The file never holds a token, only its SHA-256, one entry per line::

    # name        hash                  scopes
    sensor-gw-1   sha256:9f86d081...    ingest:measurement
    dashboards    sha256:60303ae2...    read
    ops           sha256:fd61a03a...    ingest:*,read

``ingest:<kind>`` lets a client send batches of that kind (``ingest:*`` any kind);
``read`` lets an API user call the API. A salted slow hash (scrypt, pbkdf2) protects
*passwords*, which are guessable; these tokens have 256 bits of entropy, so one SHA-256
is as safe and costs nothing per connection, and it lets the lookup be a dictionary.

Rotation without a restart: the file is looked at again (``os.stat``) at most every
:data:`RELOAD_INTERVAL` seconds when a token is checked, and reloaded when its modification
time, size or inode changed. An unreadable or broken new version is logged and the previous
one kept, so a bad edit never locks everyone out. Connections check that their token is
still listed whenever the file changed, so removing a line revokes it within seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError
from .logs import get_logger

__all__ = [
    "READ_SCOPE",
    "RELOAD_INTERVAL",
    "Principal",
    "TokenFile",
    "hash_token",
    "new_token",
    "parse_tokens",
]

log = get_logger(__name__)

READ_SCOPE = "read"
#: seconds between two looks at the token file for changes
RELOAD_INTERVAL = 1.0
#: a token longer than this is refused before hashing (bounds work per hello)
MAX_TOKEN_LENGTH = 512

_HASH = re.compile(r"sha256:([0-9a-f]{64})\Z")
_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,128}\Z")
_SCOPE = re.compile(r"(read|ingest:(\*|[a-z0-9_.-]{1,64}))\Z")


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode("ascii")


def hash_token(token: str) -> str:
    """The form stored in the token file: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a token (or a client certificate) stands for, and what it may do."""

    name: str
    scopes: frozenset[str]

    def may_ingest(self, kind: str) -> bool:
        return "ingest:*" in self.scopes or f"ingest:{kind}" in self.scopes

    @property
    def may_read(self) -> bool:
        return READ_SCOPE in self.scopes


def parse_tokens(text: str, source: str = "token file") -> dict[str, Principal]:
    """``sha256 hex digest -> Principal`` from the file's text; raises ConfigError."""
    entries: dict[str, Principal] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source} line {number}"
        parts = line.split()
        if len(parts) != 3:
            raise ConfigError(f"{where}: expected 'NAME sha256:HEX SCOPES', got {len(parts)} fields")
        name, hashed, scopes_text = parts
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: bad name {name!r}")
        match = _HASH.fullmatch(hashed)
        if match is None:
            raise ConfigError(f"{where}: the token must be stored hashed, as sha256:<64 hex digits> "
                              "(see 'sluice token new'); plain tokens are not accepted")
        scopes = frozenset(s for s in scopes_text.split(",") if s)
        bad = sorted(s for s in scopes if not _SCOPE.fullmatch(s))
        if bad or not scopes:
            raise ConfigError(f"{where}: bad scopes {bad or scopes_text!r} (read, ingest:<kind>, ingest:*)")
        if match.group(1) in entries:
            raise ConfigError(f"{where}: the same token hash is listed twice")
        entries[match.group(1)] = Principal(name, scopes)
    return entries


class TokenFile:
    """The token file, reloaded when it changes; looks tokens up by their hash."""

    def __init__(self, path: str, *, reload_interval: float = RELOAD_INTERVAL) -> None:
        self.path = path
        self._interval = reload_interval
        self._entries: dict[str, Principal] = {}
        self._signature: Optional[tuple[int, int, int]] = None
        self._checked_at = 0.0
        #: bumped on every successful reload; connections re-check their token when it moves
        self.generation = 0
        self._load(initial=True)

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, *, initial: bool = False) -> None:
        try:
            signature = self._stat()
            with open(self.path, encoding="utf-8") as fh:
                entries = parse_tokens(fh.read(), self.path)
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            if initial:
                raise ConfigError(f"token file {self.path!r}: {exc}") from exc
            log.error("token_file_reload_failed", path=self.path, error=str(exc)[:300],
                      kept_entries=len(self._entries))
            return
        self._entries = entries
        self._signature = signature
        self.generation += 1
        if not initial:
            log.info("token_file_reloaded", path=self.path, entries=len(entries))

    def refresh(self) -> None:
        """Reload if the file changed, looking at most every ``reload_interval`` seconds."""
        now = time.monotonic()
        if now - self._checked_at < self._interval:
            return
        self._checked_at = now
        try:
            signature = self._stat()
        except OSError as exc:
            log.error("token_file_reload_failed", path=self.path, error=str(exc)[:300],
                      kept_entries=len(self._entries))
            return
        if signature != self._signature:
            self._load()

    def lookup(self, token: Optional[str]) -> Optional[Principal]:
        """The principal for ``token``, or None (missing, unknown or revoked)."""
        self.refresh()
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        return self.lookup_digest(hashlib.sha256(token.encode("utf-8")).hexdigest())

    def lookup_digest(self, digest: str) -> Optional[Principal]:
        """The principal for an already hashed token (used to re-check after a reload)."""
        for known, principal in self._entries.items():
            # Constant time per entry: the lookup does not reveal how much of a digest matched.
            if hmac.compare_digest(known, digest):
                return principal
        return None

    def __len__(self) -> int:
        return len(self._entries)
