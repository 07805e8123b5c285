"""``sluice client``: streams records to sluice servers, and is the project's load generator.

- :mod:`.sources`: synthetic sensors (generator mode) and NDJSON input (file mode)
- :mod:`.stream`: one persistent connection: pipelining, acks, resends, splitting
- :mod:`.feed`, :mod:`.batch`: the batches between the two
- :mod:`.report`: counters, the progress line, the summary and the exit status
- :mod:`.runner`: ``ClientService`` puts them together; :mod:`.settings`: the settings;
  :mod:`.main`: the command
"""

from __future__ import annotations

from .report import Summary
from .settings import ClientSettings

__all__ = ["ClientSettings", "Summary"]
