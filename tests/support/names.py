"""Names unique to this test run, for everything a test creates on a shared machine.

Several test runs share one machine (two CI clones, people's worktrees): one RabbitMQ, one
Docker engine, one Elasticsearch stand-in per run but one port space. Every resource a test
creates is named with :func:`unique_name`, so no run can see, reuse or delete another's::

    from tests.support.names import unique_name

    project = unique_name("sluicee2e")   # compose project:  "sluicee2e3f9c2a7d01be"
    stack = unique_name("sluiceswarm")   # swarm stack
    namespace = unique_name("t")         # RabbitMQ namespace, index prefix

The randomness comes from :func:`os.urandom` (through :func:`uuid.uuid4`), never from the
``random`` module: pytest-randomly reseeds ``random`` identically in every run that uses the
same seed, so two concurrent runs would draw the same "random" names. Ports are not named
here: ask the OS for a free one (``tests.support.rabbitmq.free_port``).

:data:`RUN_ID` names this pytest process for things shared by all its tests (a log
directory, a label to find leftovers by); it also comes from the pid and ``os.urandom``.
"""

from __future__ import annotations

import os
import re
import uuid

__all__ = ["RUN_ID", "unique_name"]

#: This pytest process: its pid (unique among live processes) and 4 random bytes (unique
#: across pid reuse and pid namespaces).
RUN_ID = f"{os.getpid():x}{os.urandom(4).hex()}"

# Lower-case letters and digits, starting with a letter: valid as a compose project, a swarm
# stack, a RabbitMQ name, an Elasticsearch index prefix and an Erlang node name alike.
_PREFIX = re.compile(r"^[a-z][a-z0-9]*$")


def unique_name(prefix: str, length: int = 12) -> str:
    """``prefix`` followed by ``length`` random hex digits (48 bits by default)."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"name prefix {prefix!r} must be lower-case letters and digits, starting with a letter")
    if not 8 <= length <= 32:
        raise ValueError(f"length must be 8 to 32 hex digits, not {length}")
    return prefix + uuid.uuid4().hex[:length]
