"""``sluice server`` as a command: settings, --help, and SIGTERM while clients stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sluice.errors import ConfigError
from sluice.protocol import ErrorCode
from sluice.server.settings import ServerSettings
from sluice.settings import load

from .queues import message_ids
from .rawclient import RawClient, records_payload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sluice_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(ROOT, "src"),
                                                      env.get("PYTHONPATH")]))
    return env


def test_settings_defaults() -> None:
    settings = load(ServerSettings, environ={})
    assert (settings.host, settings.port, settings.kinds) == ("0.0.0.0", 7000, ("measurement",))
    assert settings.max_frame == 4 * 1024 * 1024
    assert settings.max_inflight >= 1 and settings.max_connections >= 1


def test_settings_from_environment_and_flags() -> None:
    import argparse

    from sluice.server.main import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "7100", "--kinds", "a,b_c", "--idle-timeout", "2.5"])
    settings = load(ServerSettings, args, environ={
        "SLUICE_PORT": "7200", "SLUICE_MAX_INFLIGHT": "8", "SLUICE_NAMESPACE": "ns",
    })
    assert settings.port == 7100  # the flag wins over the environment
    assert settings.kinds == ("a", "b_c")
    assert settings.idle_timeout == 2.5
    assert settings.max_inflight == 8
    assert settings.namespace == "ns"


@pytest.mark.parametrize("environ", [
    {"SLUICE_PORT": "70000"},
    {"SLUICE_KINDS": "Bad Kind"},
    {"SLUICE_KINDS": "a.b"},
    {"SLUICE_KINDS": "dead"},
    {"SLUICE_KINDS": ""},
    {"SLUICE_MAX_FRAME": "10"},
    {"SLUICE_MAX_INFLIGHT": "0"},
    {"SLUICE_MAX_CONNECTIONS": "0"},
    {"SLUICE_IDLE_TIMEOUT": "0"},
    {"SLUICE_DRAIN_TIMEOUT": "-1"},
    {"SLUICE_PORT": "seven"},
])
def test_bad_settings_are_config_errors(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load(ServerSettings, environ=environ)


async def test_help_lists_every_server_flag() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", "server", "--help", env=sluice_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    for flag in ("--host", "--port", "--kinds", "--max-frame", "--max-inflight",
                 "--max-connections", "--idle-timeout", "--drain-timeout", "--amqp-url",
                 "--namespace", "--http-port"):
        assert flag in out.decode()


class ServerProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.listening: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(line)
            if line.get("event") == "server_listening" and not self.listening.done():
                self.listening.set_result(line)
        if not self.listening.done():
            self.listening.set_exception(RuntimeError("server exited before listening"))


@pytest.fixture
async def server_process(amqp_url: str, namespace: str) -> AsyncIterator[ServerProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", "server", "--host", "127.0.0.1", "--port", "0",
        "--http-port", "0", "--namespace", namespace, "--amqp-url", amqp_url,
        "--kinds", "measurement,other", "--drain-timeout", "20", "--max-inflight", "16",
        env=sluice_env(), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    server = ServerProcess(process)
    logs = asyncio.ensure_future(server.read_logs())
    try:
        yield server
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await logs


async def test_sigterm_while_streaming_loses_no_acked_batch(
    server_process: ServerProcess, amqp_url: str, namespace: str
) -> None:
    listening = await asyncio.wait_for(server_process.listening, 60)
    async with aiohttp.ClientSession() as http:  # ready = its broker link is up
        url = f"http://127.0.0.1:{listening['http_port']}/readyz"
        while True:
            async with http.get(url) as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
    assert any(line.get("event") == "server_settings" for line in server_process.lines)
    settings_line = next(line for line in server_process.lines
                         if line.get("event") == "server_settings")
    assert "guest:***@" in settings_line["amqp_url"]  # the password is masked
    assert settings_line["service"] == "server"

    client = await RawClient.connect(listening["port"])
    try:
        await client.hello("sigterm")
        payload = records_payload(50)
        acked: set[int] = set()
        frames: list[dict[str, Any]] = []

        async def send_forever() -> None:
            seq = 0
            while True:
                client.batch(seq, payload, count=50)
                seq += 1
                await client.writer.drain()
                await asyncio.sleep(0)  # drain() need not yield: let the reader run

        sender = asyncio.ensure_future(send_forever())
        try:
            while len(acked) < 300:
                message = await client.recv()
                assert message is not None and message["type"] == "ack", message
                acked.add(message["seq"])
            server_process.process.send_signal(signal.SIGTERM)
            frames = await client.recv_until_closed(timeout=60)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    finally:
        await client.close()

    assert await asyncio.wait_for(server_process.process.wait(), 60) == 0
    assert frames and frames[-1] == {"type": "error", "code": ErrorCode.SHUTTING_DOWN,
                                     "message": frames[-1]["message"]}
    acked |= {m["seq"] for m in frames if m["type"] == "ack"}
    queued = set(await message_ids(amqp_url, f"{namespace}.raw.measurement"))
    missing = {seq for seq in acked if f"sigterm:{seq}" not in queued}
    assert not missing, f"{len(missing)} acked batches are not in the queue"
    events = [line.get("event") for line in server_process.lines]
    assert "server_stopping" in events and "server_stopped" in events
