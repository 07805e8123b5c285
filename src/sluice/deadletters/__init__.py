"""``sluice deadletters``: look into the dead-letter queues and replay what they hold.

:mod:`.queue` walks a queue ``<ns>.dead.<kind>`` without losing or reordering anything
for good; :mod:`.settings` holds its settings and :mod:`.main` is the command (``list``,
``show``, ``replay``).
"""

from __future__ import annotations

from .queue import DeadLetterQueue, Letter, ReplayReport

__all__ = ["DeadLetterQueue", "Letter", "ReplayReport"]
