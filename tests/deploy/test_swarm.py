"""End to end on a single-node Docker Swarm: the stack of deploy/swarm/stack.yml, deployed,
damaged, rolled, scaled and removed with ``run_pipeline.sh stack``.

One scenario, in order, with numbered records (value = number) streaming from a client on
the host through nginx the whole time:
  1. up: every service healthy though they started in no particular order (sluice services
     logged failed connects to RabbitMQ nodes that were not up yet, then connected); the
     RabbitMQ cluster has three running nodes and every quorum queue a member on each; no
     secret appears in ``docker inspect``;
  2. the RabbitMQ node leading the raw queue is killed and comes back; the leadership moves;
  3. the parser service gets a rolling update (``docker service update --force``);
  4. a server replica is killed;
  5. the parser service is scaled up and then down: the raw queue's consumer count follows;
  6. the client stops, reports no failure, and Elasticsearch holds every acked record once:
     the count and the exact sum of values equal what was sent;
  7. down --volumes leaves no container, network, volume, secret or config of the stack.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.support.locks import SWARM_LOCK, machine_lock

from .pipeline import INSTALL_HINT, docker_problem, wait_for
from .swarm import (
    RABBITMQ_NODES,
    RAW_QUEUE,
    Stack,
    StreamingClient,
    docker,
    single_node_swarm,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

RATE = 100  # records/s: well inside what the Elasticsearch stand-in indexes on a busy machine


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    problem = docker_problem()
    if problem:
        pytest.fail(f"{problem}; {INSTALL_HINT}", pytrace=False)
    with machine_lock(SWARM_LOCK), single_node_swarm():
        s = Stack()
        try:
            yield s
        finally:
            s.run("down", "--volumes", check=False)


def link_events(s: Stack, service: str) -> list[str]:
    """The broker link events a service's tasks logged, in time order."""
    found = []
    for line in s.logs(service).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("event", "")).startswith("broker_"):
            found.append((str(entry.get("timestamp", "")), str(entry["event"])))
    return [event for _, event in sorted(found)]


def consumers(s: Stack) -> int:
    return int(s.queues()[RAW_QUEUE]["consumers"])


def test_stack_survives_node_loss_rolling_update_and_scaling(stack: Stack) -> None:
    s = stack
    # -- 1. up --------------------------------------------------------------------------------
    out = s.run("up")
    assert "All services are running and healthy" in out, out
    assert "Every quorum queue has a member on each of rabbitmq1 rabbitmq2 rabbitmq3" in out, out

    wait_for(lambda: len(s.running_nodes()) == 3, 120, "three running RabbitMQ nodes")
    queues = s.queues()
    quorum = {name: q for name, q in queues.items() if name.startswith("sluice.")}
    assert RAW_QUEUE in quorum, queues
    for name, q in quorum.items():
        assert sorted(q["members"]) == [f"rabbit@{n}" for n in RABBITMQ_NODES], (name, q)

    # The services were started together with the brokers: each one tried nodes that were
    # not up yet (failed connects to several URLs of its list), kept trying, and connected.
    for service in ("server", "parser"):
        events = link_events(s, service)
        assert "broker_connected" in events, (service, events)
        first_up = events.index("broker_connected")
        assert "broker_connect_failed" in events[:first_up], (service, events[:20])
        print(f"{service}: {events[:first_up].count('broker_connect_failed')} failed connects before the first link")

    # Secrets are files in the tasks, never in the service or container definitions.
    urls = s.exec("server", "cat", "/run/secrets/amqp_url")
    password = urls.split("://sluice:", 1)[1].split("@", 1)[0]
    assert len(password) >= 16 and urls.count(password) == 3, "one URL per node"
    for service in ("server", "parser", "api", "rabbitmq1"):
        shown = docker("service", "inspect", s.service(service)) + docker("inspect", s.container(service))
        assert password not in shown, f"the RabbitMQ password shows in docker inspect of {service}"
    cookie_mode = s.exec("rabbitmq1", "stat", "-c", "%a %U", "/var/lib/rabbitmq/.erlang.cookie").strip()
    assert cookie_mode == "400 rabbitmq", cookie_mode

    run_id = uuid.uuid4().hex[:10]
    client = StreamingClient(s.ingest_port, run_id, RATE)
    try:
        wait_for(lambda: (s.attempt(s.count) or 0) > RATE, 120, "records indexed through the stack", 3)

        # -- 2. the node leading the raw queue dies and comes back ----------------------------
        leader = str(s.queues()[RAW_QUEUE]["leader"]).split("@", 1)[1]
        victim = s.container(leader)
        docker("kill", victim)
        new_leader = wait_for(
            lambda: (lambda ld: ld if ld and not ld.endswith(leader) else None)(
                str(s.queues().get(RAW_QUEUE, {}).get("leader", ""))),
            120, f"a new leader of {RAW_QUEUE} after {leader} died",
        )
        wait_for(lambda: (c := s.containers(leader)) and c[0] != victim, 180, f"{leader} replaced")
        wait_for(lambda: len(s.running_nodes()) == 3, 240, f"{leader} back in the cluster")
        print(f"phase 2: killed {leader}; {RAW_QUEUE} is now led by {new_leader}; node back")
        written = client.written
        wait_for(lambda: (s.attempt(s.count) or 0) > written - RATE * 5, 180,
                 "indexing after the node loss", 3)

        # -- 3. rolling update of the parsers ------------------------------------------------
        before = set(s.containers("parser"))
        docker("service", "update", "--force", "--detach=false", s.service("parser"), timeout=300)
        # The update returns once the new tasks run; the old ones may still be draining.
        after = wait_for(
            lambda: (lambda now: now if len(now) == 2 and not (now & before) else None)(
                set(s.containers("parser"))),
            120, "only new parser tasks running",
        )
        print(f"phase 3: parsers rolled: {len(before)} old tasks replaced by {len(after)} new")

        # -- 4. a server replica dies ------------------------------------------------------
        server = s.containers("server")[0]
        docker("kill", server)
        wait_for(lambda: server not in s.containers("server") and s.running_tasks("server") == 2,
                 180, "the killed server replica replaced")
        print("phase 4: killed a server replica; replaced")

        # -- 5. scale the parsers up and down while streaming -------------------------------
        wait_for(lambda: consumers(s) == 2, 120, "two consumers on the raw queue")
        s.run("scale", "parser=4")
        seen_up = wait_for(lambda: consumers(s) if consumers(s) == 4 else 0, 120, "four consumers")
        s.run("scale", "parser=1")
        seen_down = wait_for(lambda: consumers(s) if consumers(s) == 1 else 0, 120, "one consumer")
        print(f"phase 5: consumers on {RAW_QUEUE}: 2 -> {seen_up} -> {seen_down}")
    finally:
        summary = client.finish() if client.proc.poll() is None else client.finish(timeout=5)

    # -- 6. every acked record stored exactly once ---------------------------------------------
    sent = client.written
    print(f"phase 6: client {({k: summary.get(k) for k in ('sent', 'acked', 'failed', 'resent', 'reconnects')})}")
    assert summary["exit_status"] == 0 and summary["failed"] == 0, summary
    assert summary["acked"] == sent, (summary, sent)
    expected_sum = sent * (sent + 1) / 2
    try:
        wait_for(lambda: (s.attempt(s.count) or 0) >= sent, 300,
                 f"{sent} documents in Elasticsearch (last count {s.last_count})", 3)
        settled = wait_for(lambda: s.attempt(s.stored), 120, "the sum of the stored values", 3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the store's last error: {s.last_error or 'none'}") from exc
    assert settled == (sent, expected_sum), f"stored {settled}, sent {sent} records summing to {expected_sum}"
    print(f"phase 6: {sent} records sent and acked; Elasticsearch holds {settled[0]} summing to {settled[1]:.0f}")

    # -- 7. down --volumes leaves nothing of the stack ----------------------------------------
    s.run("down", "--volumes")
    label = f"label=com.docker.stack.namespace={s.name}"
    for kind in (["ps", "-a", "-q"], ["network", "ls", "-q"], ["service", "ls", "-q"]):
        assert docker(*kind, "--filter", label).split() == [], kind
    for kind in ("volume", "secret", "config"):
        names = docker(kind, "ls", "--format", "{{.Name}}").split()
        assert [n for n in names if n.startswith(f"{s.name}_")] == [], (kind, names)
