"""``sluice token``: make a new random token and its line for a token file.

The token is printed once, on stdout, and is stored nowhere; the token file gets only its
hash. Give the token to the client (``SLUICE_TOKEN_FILE``) or API user, then add the line.
"""

from __future__ import annotations

import argparse
import sys

from .auth import hash_token, new_token, parse_tokens
from .errors import ConfigError

__all__ = ["HELP", "add_arguments", "main"]

HELP = ("print a new random token on stdout and its hashed line for a token file "
        "(--file appends it there), for `sluice server --token-file` (SLUICE_TOKEN_FILE) and "
        "`sluice api --token-file`; a client reads its token from SLUICE_TOKEN_FILE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="who the token is for (shown in logs)")
    parser.add_argument("--scopes", required=True,
                        help="comma-separated: ingest:<kind>, ingest:* (any kind), read (the API)")
    parser.add_argument("--file", default="", metavar="PATH",
                        help="append the hashed line to this token file (created if absent)")


def main(args: argparse.Namespace) -> int:
    token = new_token()
    line = f"{args.name} {hash_token(token)} {args.scopes}"
    parse_tokens(line, "the new entry")  # the same checks the services apply: fail now, not there
    if args.file:
        try:
            with open(args.file, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            raise ConfigError(f"--file {args.file!r}: {exc.strerror or exc}") from exc
        print(f"appended the hashed entry for {args.name!r} to {args.file}", file=sys.stderr)
    else:
        print(f"token file line (hashed; the token itself is printed once, on stdout):\n{line}",
              file=sys.stderr)
    print(token)
    return 0
