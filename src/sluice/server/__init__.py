"""``sluice server``: accepts client connections speaking wire protocol v1 and publishes
every batch to RabbitMQ with publisher confirms, acking each batch once it is confirmed.

- :mod:`.settings`: the settings; :mod:`.main`: the command-line entry point;
- :mod:`.app`: the listener, connection limit, graceful shutdown and the ops side port;
- :mod:`.connection`: one client connection (hello, batches, acks, backpressure, errors);
- :mod:`.publisher`: batches to AMQP messages, pipelined confirms, nack codes;
- :mod:`.metrics`: the Prometheus metrics the server exports.
"""

from __future__ import annotations

from .app import IngestServer
from .settings import ServerSettings

__all__ = ["IngestServer", "ServerSettings"]
