"""``sluice api``: aggregations over the stored measurements, the pipeline's own state,
an OpenAPI document and a dashboard, all served by one stateless aiohttp process.

Modules: :mod:`.params` (query parameters, shared by the handlers and the OpenAPI
document), :mod:`.queries` (Elasticsearch request bodies and result shaping),
:mod:`.store` (the Elasticsearch client with errors classified), :mod:`.pipeline`
(queue depths from RabbitMQ), :mod:`.handlers`, :mod:`.app` (application factory and
middleware), :mod:`.openapi`, :mod:`.settings`, :mod:`.service` (the service object) and
:mod:`.main` (the command).
"""

from __future__ import annotations

__all__: list[str] = []
