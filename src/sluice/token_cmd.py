"""``sluice token``: make a new random token and its line for a token file.

The token is printed once, on stdout, and is stored nowhere; the token file gets only its
hash. Give the token to the client (``SLUICE_TOKEN_FILE``) or API user, then add the line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .auth import hash_token, new_token, parse_tokens
from .errors import ConfigError
from .settings import CommonSettings, load, option
from .settings import add_arguments as add_settings_arguments

__all__ = ["HELP", "TokenSettings", "add_arguments", "main"]

HELP = ("print a new random token on stdout and its hashed line for a token file "
        "(--append-to adds it there), for `sluice server --token-file` (SLUICE_TOKEN_FILE) and "
        "`sluice api --token-file`; a client reads its token from SLUICE_TOKEN_FILE")


@dataclass(frozen=True)
class TokenSettings(CommonSettings):
    name: str = option("", "who the token is for (shown in logs); required")
    scopes: str = option("", "comma-separated: ingest:<kind>, ingest:* (any kind), read (the API); required")
    append_to: str = option("", "append the hashed line to this token file (created if absent)",
                            metavar="PATH")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name or not self.scopes:
            raise ConfigError("--name and --scopes are required")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, TokenSettings)


def main(args: argparse.Namespace) -> int:
    settings = load(TokenSettings, args)
    token = new_token()
    line = f"{settings.name} {hash_token(token)} {settings.scopes}"
    parse_tokens(line, "the new entry")  # the same checks the services apply: fail now, not there
    if settings.append_to:
        try:
            with open(settings.append_to, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            raise ConfigError(f"--append-to {settings.append_to!r}: {exc.strerror or exc}") from exc
        print(f"appended the hashed entry for {settings.name!r} to {settings.append_to}", file=sys.stderr)
    else:
        print(f"token file line (hashed; the token itself is printed once, on stdout):\n{line}",
              file=sys.stderr)
    print(token)
    return 0
