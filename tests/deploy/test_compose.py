"""End to end in Docker: clients -> nginx -> servers -> RabbitMQ -> parsers -> Elasticsearch,
started, scaled, damaged and removed with ``run_pipeline.sh``.

One scenario, in order, because each step builds on the stack the previous one left:
  1. up with 5 clients, 3 servers, 2 parsers: every server got connections, every parser
     indexed, Elasticsearch holds exactly the records the clients report as acked, and the
     API and dashboard answer through nginx;
  2. scale servers to 4: new connections reach the new replica, nginx is not restarted;
  3. kill a server and a parser while clients stream: no acked record goes missing;
  4. down --volumes leaves nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from .pipeline import Pipeline, client_summaries, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

# Prometheus series the services export (summed over labels).
SERVER_CONNECTIONS = "sluice_server_connections_total"
SERVER_OPEN = "sluice_server_connections_open"
PARSER_INDEXED = "sluice_parser_records_indexed_total"



def settled_es_count(p: Pipeline, expected: int, timeout: float = 120) -> int:
    """Elasticsearch's count once it reaches ``expected`` and stays put for a few seconds
    (so a surplus would show too), or the last count after ``timeout``."""
    deadline = time.monotonic() + timeout
    count = p.es_count()
    while time.monotonic() < deadline and count < expected:
        time.sleep(1)
        count = p.es_count()
    time.sleep(3)
    return p.es_count()


def totals(summaries: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(int(s[k]) for s in summaries) for k in ("produced", "sent", "acked", "failed")}


def test_pipeline_in_docker(pipeline: Pipeline) -> None:
    p = pipeline
    count = int(p.env["SLUICE_CLIENT_COUNT"])

    # -- 1. up ------------------------------------------------------------------------------
    out = p.run("up", "--scale", "client=5", "--scale", "server=3", "--scale", "parser=2")
    assert "All services are healthy" in out, out
    assert f"localhost:{p.http_port}" in out, out

    clients = p.containers("client", running=False)
    assert len(clients) == 5
    codes = p.wait_exit(clients, timeout=300)
    summaries = client_summaries(p.run("logs", "client"))
    assert len(summaries) == 5, p.run("logs", "client")[-4000:]
    phase1 = totals(summaries)
    assert phase1["acked"] == 5 * count and phase1["failed"] == 0, (summaries, codes)
    assert set(codes.values()) == {0}, codes

    indexed = settled_es_count(p, phase1["acked"])
    assert indexed == phase1["acked"], f"Elasticsearch has {indexed}, clients acked {phase1}"

    servers = p.containers("server")
    assert len(servers) == 3
    connections = {s[:12]: p.metrics(s).get(SERVER_CONNECTIONS, 0) for s in servers}
    assert all(n > 0 for n in connections.values()), connections

    parsers = p.containers("parser")
    assert len(parsers) == 2
    per_parser = {c[:12]: p.metrics(c).get(PARSER_INDEXED, 0) for c in parsers}
    assert all(n > 0 for n in per_parser.values()), per_parser
    print(f"phase 1: clients {phase1}, indexed {indexed}, connections per server "
          f"{connections}, records per parser {per_parser}")
    assert sum(per_parser.values()) >= phase1["acked"], per_parser

    status, ctype, body = p.http(p.http_port, "/api/v1/stats")
    assert status == 200 and "json" in ctype, (status, body[:500])
    json.loads(body)
    status, ctype, body = p.http(p.http_port, "/")
    assert status == 200 and "html" in ctype, (status, ctype, body[:500])

    # -- 2. scale out: the new replica gets connections, nginx keeps running ------------------
    nginx = p.containers("nginx")
    assert len(nginx) == 1
    nginx_started = p.inspect(nginx[0])["State"]["StartedAt"]

    p.run("scale", "server=4")
    new = set(p.containers("server")) - set(servers)
    assert len(new) == 1, p.containers("server")
    newcomer = new.pop()
    # nginx caches Docker's DNS answer for 2 s: clients keep coming until one reaches it.

    acked_since = 0

    def newcomer_connected() -> float:
        nonlocal acked_since
        names = p.start_clients(1, count=400, rate=0, connections=16)
        p.wait_exit(names, timeout=120)
        acked_since += totals(client_summaries(p.logs(names[0])))["acked"]
        return p.metrics(newcomer).get(SERVER_CONNECTIONS, 0)

    joined = wait_for(newcomer_connected, 120, "connections on the new server replica", 0)
    print(f"phase 2: the new server replica {newcomer[:12]} took {joined:.0f} connections")
    assert p.containers("nginx") == nginx
    nginx_state = p.inspect(nginx[0])["State"]
    assert nginx_state["StartedAt"] == nginx_started and nginx_state["Running"], nginx_state

    # -- 3. a server and a parser die mid-stream; acked records survive ---------------------
    baseline = settled_es_count(p, phase1["acked"] + acked_since)
    assert baseline == phase1["acked"] + acked_since

    # 20 s of streaming per client: a loaded machine indexes the first records seconds
    # after they are sent, and the kills must still land while every client streams.
    names = p.start_clients(3, count=8000, rate=400, connections=4)
    wait_for(lambda: p.es_count() > baseline + 500, 60, "records flowing")
    streaming = [n for n in names if p.inspect(n)["State"]["Running"]]
    assert streaming == names, "the clients finished before anything was killed"
    # The server with the most open client connections, so the kill cuts real streams.
    victim_server = max(p.containers("server"), key=lambda c: p.metrics(c).get(SERVER_OPEN, 0))
    victim_parser = p.containers("parser")[0]
    killed_at = p.es_count()
    subprocess.run(["docker", "kill", victim_server, victim_parser], check=True, capture_output=True)

    p.wait_exit(names, timeout=300)
    stormy = [s for n in names for s in client_summaries(p.logs(n))]
    assert len(stormy) == 3, [p.logs(n)[-2000:] for n in names]
    phase3 = totals(stormy)
    final = settled_es_count(p, baseline + phase3["acked"], timeout=180)
    print(f"phase 3: killed server {victim_server[:12]} and parser {victim_parser[:12]} at "
          f"{killed_at - baseline} indexed; clients {phase3}, reconnects "
          f"{sum(s['reconnects'] for s in stormy)}, resent {sum(s['resent'] for s in stormy)}; "
          f"Elasticsearch {final - baseline} new documents")
    # Every acked record is indexed; nothing is indexed that was never sent.
    assert baseline + phase3["acked"] <= final <= baseline + phase3["sent"], (phase3, final)
    if phase3["failed"] == 0:
        assert final == baseline + phase3["acked"], (phase3, final)

    # -- 4. down --volumes leaves nothing ----------------------------------------------------
    p.run("down", "--volumes")
    label = f"label=com.docker.compose.project={p.project}"
    for kind in (["ps", "-a", "-q"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        left = subprocess.run(
            ["docker", *kind, "--filter", label], capture_output=True, text=True, check=True
        ).stdout.split()
        assert left == [], (kind, left)
