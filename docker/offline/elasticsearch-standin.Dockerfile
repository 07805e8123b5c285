# Elasticsearch stand-in for demos and tests on machines without a registry (see
# scripts/build-offline-images.sh): osmem-server, an in-memory OpenSearch-compatible server,
# behind es_proxy.py, which maps elasticsearch-py 9's vendor media types to plain JSON.
# Nothing is persisted. Use the real image (the compose default) for anything else.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/standin \
    && /opt/standin/bin/pip install --no-cache-dir --disable-pip-version-check osmem-server aiohttp \
    && ln -s /opt/standin/lib/python3*/site-packages/osmem_server/bin/osmem-server /usr/local/bin/osmem-server \
    && useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin standin
COPY es_proxy.py /opt/standin/es_proxy.py
COPY es-standin-entrypoint.sh /usr/local/bin/es-standin
USER standin
EXPOSE 9200
CMD ["/usr/local/bin/es-standin"]
