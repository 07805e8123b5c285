"""Ingest over TLS and with tokens: an in-process server with a real RabbitMQ, the real
client (``sluice.client.runner.run``) and a raw protocol client, throwaway certificates
from ``trustme``.

Each refusal is checked for *what the client is told*, and each acceptance by what reached
the queue (the message ids the client sent), never by the client's own report alone.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from sluice.auth import hash_token, new_token
from sluice.client.report import EXIT_REFUSED, Summary, exit_status
from sluice.client.runner import run
from sluice.client.settings import ClientSettings
from sluice.protocol import ErrorCode, NackCode
from sluice.topology import Topology

from .conftest import StartServer
from .queues import drain_queue, poll
from .rawclient import RawClient, records_payload


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """Files: the CA, a server certificate for localhost/127.0.0.1, a client certificate,
    an expired server certificate and a second, unrelated CA."""
    files: dict[str, str] = {}

    def write(name: str, blob: trustme.Blob) -> str:
        path = tmp_path / name
        blob.write_to_path(str(path))
        files[name] = str(path)
        return str(path)

    write("ca.pem", ca.cert_pem)
    server = ca.issue_cert("localhost", "127.0.0.1")
    write("server.pem", server.cert_chain_pems[0])
    write("server.key", server.private_key_pem)
    client = ca.issue_cert("sensor-gw-1")
    write("client.pem", client.cert_chain_pems[0])
    write("client.key", client.private_key_pem)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    expired = ca.issue_cert("localhost", "127.0.0.1", not_before=past,
                            not_after=past + datetime.timedelta(days=1))
    write("expired.pem", expired.cert_chain_pems[0])
    write("expired.key", expired.private_key_pem)
    other = trustme.CA()
    write("other-ca.pem", other.cert_pem)
    return files


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        await client.close()


def client_settings(port: int, **overrides: Any) -> ClientSettings:
    values: dict[str, Any] = {"target": f"127.0.0.1:{port}", "count": 200, "batch_size": 50,
                              "seed": 7, "instance_id": "tls-test", "give_up_after": 20.0}
    values.update(overrides)
    return ClientSettings(**values)


async def queued_records(amqp_url: str, namespace: str, kind: str = "measurement") -> int:
    messages = await drain_queue(amqp_url, Topology(namespace).raw_queue(kind))
    return sum(int(m.header.properties.headers["count"]) for m in messages)


async def tls_raw(port: int, ca_file: str, **chain: str) -> RawClient:
    context = ssl.create_default_context(cafile=ca_file)
    if chain:
        context.load_cert_chain(chain["cert"], chain["key"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="localhost")
    return RawClient(reader, writer)


# -- TLS ------------------------------------------------------------------------------------


async def test_good_certificate_streams_every_record(
    start_server: StartServer, pki: dict[str, str], amqp_url: str, namespace: str
) -> None:
    """A client trusting the server's CA streams over TLS; every record reaches the queue."""
    server = await start_server(tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    assert server.port is not None
    summary = await run(client_settings(server.port, ca_file=pki["ca.pem"], server_name="localhost"),
                        progress=False)
    assert summary.fatal_error is None and summary.acked == 200
    assert await queued_records(amqp_url, namespace) == 200


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("unknown_ca", "unknown CA"),
        ("wrong_name", "not valid for the name"),
        ("expired", "has expired"),
    ],
)
async def test_bad_server_certificate_stops_the_client_at_once(
    start_server: StartServer, pki: dict[str, str], setup: str, expected: str
) -> None:
    """Unknown CA, name mismatch and expiry each end the client with its own reason, exit 5,
    without reconnecting until --give-up-after."""
    cert, key, ca, name = pki["server.pem"], pki["server.key"], pki["ca.pem"], "localhost"
    if setup == "unknown_ca":
        ca = pki["other-ca.pem"]
    elif setup == "wrong_name":
        name = "ingest.example.org"
    else:
        cert, key = pki["expired.pem"], pki["expired.key"]
    server = await start_server(tls_cert=cert, tls_key=key)
    assert server.port is not None
    summary = await asyncio.wait_for(
        run(client_settings(server.port, ca_file=ca, server_name=name, give_up_after=600.0),
            progress=False), 30)
    assert summary.fatal_error is not None and expected in summary.fatal_error
    assert summary.acked == 0 and summary.reconnects == 0
    assert exit_status(summary) == EXIT_REFUSED


async def test_plaintext_client_is_refused_by_a_tls_server(
    start_server: StartServer, pki: dict[str, str], amqp_url: str, namespace: str
) -> None:
    """A plain hello to a TLS port gets no welcome, and nothing is published."""
    server = await start_server(tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    assert server.port is not None
    raw = await RawClient.connect(server.port)
    try:
        raw.send({"type": "hello", "version": 1, "client_id": "plain"})
        raw.batch(0, records_payload(3), count=3)
        assert await raw.recv(timeout=15) is None
    finally:
        await raw.close()
    summary = await run(client_settings(server.port, give_up_after=1.0), progress=False)
    assert summary.acked == 0
    assert await queued_records(amqp_url, namespace) == 0


async def test_tls_client_against_a_plain_server_stops_clearly(
    start_server: StartServer, pki: dict[str, str]
) -> None:
    server = await start_server()
    assert server.port is not None
    summary = await asyncio.wait_for(
        run(client_settings(server.port, ca_file=pki["ca.pem"], give_up_after=600.0), progress=False), 30)
    assert summary.fatal_error is not None and "does not speak TLS" in summary.fatal_error


async def test_client_certificate_required(
    start_server: StartServer, pki: dict[str, str], amqp_url: str, namespace: str
) -> None:
    """With --tls-client-ca, a client without a certificate is refused (clearly, at once);
    one with a certificate from that CA streams."""
    server = await start_server(tls_cert=pki["server.pem"], tls_key=pki["server.key"],
                                tls_client_ca=pki["ca.pem"])
    assert server.port is not None
    refused = await asyncio.wait_for(
        run(client_settings(server.port, ca_file=pki["ca.pem"], server_name="localhost",
                            give_up_after=600.0), progress=False), 30)
    assert refused.fatal_error is not None and "client certificate" in refused.fatal_error
    accepted = await run(client_settings(server.port, ca_file=pki["ca.pem"], server_name="localhost",
                                         cert=pki["client.pem"], key=pki["client.key"]),
                         progress=False)
    assert accepted.acked == 200
    assert await queued_records(amqp_url, namespace) == 200


# -- tokens ---------------------------------------------------------------------------------


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    plain = {name: new_token() for name in ("all", "measurements", "revoked")}
    path = tmp_path / "tokens"
    path.write_text(
        f"all {hash_token(plain['all'])} ingest:*\n"
        f"measurements {hash_token(plain['measurements'])} ingest:measurement\n"
        f"revoked {hash_token(plain['revoked'])} ingest:*\n"
    )
    return path, plain


async def hello(client: RawClient, token: Any) -> dict[str, Any]:
    message = {"type": "hello", "version": 1, "client_id": "tok"}
    if token is not None:
        message["token"] = token
    client.send(message)
    reply = await client.recv()
    assert reply is not None
    return reply


async def test_tokens_refused_while_another_connection_streams(
    start_server: StartServer, tokens: tuple[Path, dict[str, str]], clients: list[RawClient],
    amqp_url: str, namespace: str,
) -> None:
    """A wrong or missing token is auth_failed, and a connection already admitted keeps
    getting its batches acked meanwhile."""
    path, plain = tokens
    server = await start_server(token_file=str(path))
    assert server.port is not None
    good = await RawClient.connect(server.port)
    clients.append(good)
    assert (await hello(good, plain["all"]))["type"] == "welcome"
    for seq, token in enumerate([None, "not-a-token", plain["all"] + "x", 42]):
        bad = await RawClient.connect(server.port)
        clients.append(bad)
        reply = await hello(bad, token)
        expected = ErrorCode.BAD_MESSAGE if token == 42 else ErrorCode.AUTH_FAILED
        assert reply["type"] == "error" and reply["code"] == expected, reply
        good.batch(seq, records_payload(2, start=2 * seq), count=2)
        assert await good.recv() == {"type": "ack", "seq": seq}
    assert await queued_records(amqp_url, namespace) == 8


async def test_token_limited_to_one_kind(
    start_server: StartServer, tokens: tuple[Path, dict[str, str]], clients: list[RawClient],
    amqp_url: str, namespace: str,
) -> None:
    """A token for measurements gets other kinds nacked 'forbidden' and measurements acked."""
    path, plain = tokens
    server = await start_server(token_file=str(path))
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    assert (await hello(client, plain["measurements"]))["type"] == "welcome"
    client.batch(1, records_payload(3), kind="other", count=3)
    nack = await client.recv()
    assert nack is not None and nack["type"] == "nack" and nack["code"] == NackCode.FORBIDDEN, nack
    client.batch(2, records_payload(3), count=3)
    assert await client.recv() == {"type": "ack", "seq": 2}
    assert await queued_records(amqp_url, namespace, "other") == 0
    assert await queued_records(amqp_url, namespace) == 3


async def test_revoked_token_ends_its_connection_and_new_ones(
    start_server: StartServer, tokens: tuple[Path, dict[str, str]], clients: list[RawClient],
) -> None:
    """Removing a line from the token file (no restart) refuses that token on new
    connections and ends its open connection at its next batch; other tokens are unaffected."""
    path, plain = tokens
    server = await start_server(token_file=str(path))
    assert server.port is not None
    doomed = await RawClient.connect(server.port)
    other = await RawClient.connect(server.port)
    clients.extend([doomed, other])
    assert (await hello(doomed, plain["revoked"]))["type"] == "welcome"
    assert (await hello(other, plain["all"]))["type"] == "welcome"
    kept = [line for line in path.read_text().splitlines() if not line.startswith("revoked ")]
    replacement = path.with_suffix(".new")
    replacement.write_text("\n".join(kept) + "\n")
    replacement.replace(path)  # atomic, as an operator (or a secret mount) would do it

    async def refused_on_new_connection() -> bool:
        probe = await RawClient.connect(server.port or 0)
        try:
            reply = await hello(probe, plain["revoked"])
        finally:
            await probe.close()
        return reply.get("code") == ErrorCode.AUTH_FAILED

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await refused_on_new_connection():
        assert loop.time() < deadline, "the revoked token was still accepted"
        await asyncio.sleep(0.2)
    doomed.batch(0, records_payload(1), count=1)
    reply = await doomed.recv()
    assert reply is not None and reply["type"] == "error" and reply["code"] == ErrorCode.AUTH_FAILED
    other.batch(0, records_payload(1), count=1)
    assert await other.recv() == {"type": "ack", "seq": 0}


async def test_client_with_wrong_token_stops_at_once(
    start_server: StartServer, tokens: tuple[Path, dict[str, str]]
) -> None:
    path, plain = tokens
    server = await start_server(token_file=str(path))
    assert server.port is not None
    refused = await asyncio.wait_for(
        run(client_settings(server.port, token="wrong", give_up_after=600.0), progress=False), 30)
    assert refused.fatal_error is not None and ErrorCode.AUTH_FAILED in refused.fatal_error
    assert exit_status(refused) == EXIT_REFUSED
    accepted: Summary = await run(client_settings(server.port, token=plain["measurements"]),
                                  progress=False)
    assert accepted.acked == 200 and accepted.fatal_error is None


async def test_tls_and_client_certificate_without_token(
    start_server: StartServer, pki: dict[str, str], tokens: tuple[Path, dict[str, str]],
    clients: list[RawClient],
) -> None:
    """With both a token file and a client CA, a verified certificate admits a client
    without a token, and a wrong token is refused even with a certificate."""
    path, _ = tokens
    server = await start_server(tls_cert=pki["server.pem"], tls_key=pki["server.key"],
                                tls_client_ca=pki["ca.pem"], token_file=str(path))
    assert server.port is not None
    with_cert = await tls_raw(server.port, pki["ca.pem"], cert=pki["client.pem"], key=pki["client.key"])
    clients.append(with_cert)
    assert (await hello(with_cert, None))["type"] == "welcome"
    wrong = await tls_raw(server.port, pki["ca.pem"], cert=pki["client.pem"], key=pki["client.key"])
    clients.append(wrong)
    assert (await hello(wrong, "wrong"))["code"] == ErrorCode.AUTH_FAILED
    with_cert.batch(0, records_payload(1), count=1)
    assert await with_cert.recv() == {"type": "ack", "seq": 0}
    await poll(lambda: server.connections >= 1)
