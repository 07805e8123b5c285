from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sluice.client.main import add_arguments
from sluice.client.settings import ClientSettings, parse_target
from sluice.errors import ConfigError
from sluice.settings import load

from .fakes import FakeServer

ROOT = Path(__file__).resolve().parents[2]


def _settings(*argv: str, environ: dict[str, str] | None = None) -> ClientSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load(ClientSettings, parser.parse_args(list(argv)), environ or {})


def test_defaults_match_the_service_contract() -> None:
    s = _settings()
    assert (s.target, s.connections, s.batch_size, s.kind) == ("localhost:7000", 1, 2000, "measurement")
    assert s.host_port == ("localhost", 7000)
    assert s.seed is None and not s.json


def test_flags_override_environment() -> None:
    s = _settings("--connections", "3", "--seed", "9", "--json",
                  environ={"SLUICE_CONNECTIONS": "2", "SLUICE_TARGET": "lb:7001"})
    assert (s.connections, s.seed, s.json, s.target) == (3, 9, True, "lb:7001")


@pytest.mark.parametrize(("target", "expected"), [
    ("h:1", ("h", 1)), ("10.0.0.1:7000", ("10.0.0.1", 7000)), ("[::1]:7000", ("::1", 7000)),
])
def test_parse_target(target: str, expected: tuple[str, int]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("argv", [
    ["--target", "nohost"], ["--target", "h:0"], ["--connections", "0"], ["--batch-size", "0"],
    ["--rate", "-1"], ["--kind", "Bad Kind"], ["--kind", "logs"], ["--give-up-after", "-1"],
])
def test_bad_settings_are_refused(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        _settings(*argv)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    yield server
    await server.close()


async def _cli(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", "client", *argv, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_json_summary_and_exit_0(fake: FakeServer) -> None:
    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--count", "2500", "--seed", "5",
                                "--connections", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["acked"] == summary["sent"] == 2500
    assert summary["failed"] == 0 and summary["seed"] == 5
    assert len(fake.acked_records()) == 2500


async def test_cli_file_mode_with_bad_lines_exits_3(fake: FakeServer, tmp_path: Path) -> None:
    port = await fake.start()
    good = {"id": "a", "sensor": "s", "metric": "m", "value": 1, "ts": 1_700_000_000_000}
    lines = [json.dumps(good), "not json", json.dumps({**good, "id": "b"}), '{"id": "c"}']
    path = tmp_path / "in.ndjson"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--file", str(path), "--json")
    assert code == 3, err
    summary = json.loads(out)
    assert summary["acked"] == 2 and summary["invalid"] == 2
    assert summary["invalid_lines"] == [2, 4]
    logged = [json.loads(line) for line in err.splitlines() if '"invalid_line"' in line]
    assert [entry["line"] for entry in logged] == [2, 4]
    assert sorted(r["id"] for r in fake.acked_records()) == ["a", "b"]


async def test_cli_reads_stdin(fake: FakeServer) -> None:
    port = await fake.start()
    good = {"id": "a", "sensor": "s", "metric": "m", "value": 1, "ts": 1_700_000_000_000}
    data = "".join(json.dumps({**good, "id": f"s{i}"}) + "\n" for i in range(30)).encode()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--file", "-", "--json",
                                "--batch-size", "7", stdin=data)
    assert code == 0, err
    assert json.loads(out)["acked"] == 30
    assert sorted(r["id"] for r in fake.acked_records()) == sorted(f"s{i}" for i in range(30))


async def test_cli_exits_1_when_records_are_not_acked() -> None:
    fake = FakeServer()
    port = await fake.start()
    await fake.close()
    code, out, _ = await _cli("--target", f"127.0.0.1:{port}", "--count", "100", "--give-up-after", "1",
                              "--json")
    assert code == 1
    summary = json.loads(out)
    assert summary["acked"] == 0 and summary["failed"] == summary["produced"] > 0
    assert summary["source_error"] is None


async def test_cli_exits_4_when_the_input_cannot_be_read(fake: FakeServer) -> None:
    # /proc/self/mem opens (so it passes every up-front check) but its first read fails with EIO
    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--file", "/proc/self/mem", "--json")
    assert code == 4, err
    summary = json.loads(out)
    assert "Input/output error" in summary["source_error"]
    assert '"source_failed"' in err


async def test_cli_refuses_a_file_it_cannot_open_before_connecting(tmp_path: Path) -> None:
    code, out, err = await _cli("--target", "127.0.0.1:1", "--file", str(tmp_path / "nope.ndjson"))
    assert code == 2
    assert out == ""
    assert "cannot be read" in err and "nope.ndjson" in err


async def test_cli_text_summary(fake: FakeServer) -> None:
    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--count", "10")
    assert code == 0, err
    for word in ("sent", "acked", "nacked", "resent", "failed", "elapsed", "records/s", "p50", "p99"):
        assert word in out


async def test_cli_help_lists_client_flags() -> None:
    code, out, _ = await _cli("--help")
    assert code == 0
    for flag in ("--target", "--connections", "--batch-size", "--linger-ms", "--rate", "--duration",
                 "--count", "--sensors", "--seed", "--file", "--json", "--max-tries", "--kind",
                 "--give-up-after"):
        assert flag in out


async def test_cli_reports_progress_on_stderr_when_not_a_terminal(fake: FakeServer) -> None:
    """Not a terminal (a pipe, a container log): JSON progress lines while the run goes on."""
    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--rate", "2000", "--duration", "2s",
                                "--report-interval", "200ms", "--json", "--seed", "1")
    assert code == 0, err
    summary = json.loads(out)
    reports = [json.loads(line) for line in err.splitlines() if '"event": "progress"' in line]
    assert len(reports) >= 3, err
    for key in ("rate", "acked", "in_flight", "nacked", "resent", "reconnects", "failed", "elapsed"):
        assert key in reports[0]
    acked = [r["acked"] for r in reports]
    assert acked == sorted(acked) and acked[-1] <= summary["acked"]
    assert summary["acked"] == len(fake.acked_records())


async def test_cli_text_progress_and_whole_run_percentiles(fake: FakeServer) -> None:
    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--count", "3000", "--rate", "3000",
                                "--batch-size", "100", "--report-interval", "0.2")
    assert code == 0, err
    assert "rec/s  acked" in err and "reconnects" in err
    assert "p90" in out and "p99.9" in out and "max" in out
    assert f"({len(fake.acked)} batches, whole run)" in out


async def test_cli_json_summary_latency_fields(fake: FakeServer) -> None:
    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--count", "2000", "--batch-size", "100",
                                "--json", "--report-interval", "0")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["acked_batches"] == 20
    lat = [summary[f"ack_latency_{p}_ms"] for p in ("p50", "p90", "p99", "p99_9", "max")]
    assert lat == sorted(lat) and lat[-1] > 0
    assert '"progress"' not in err


async def test_cli_extra_tags_make_bigger_valid_records(fake: FakeServer) -> None:
    """The record-size knob: extra tags of the given size, records still valid measurements."""
    from sluice.records import validate_measurement

    port = await fake.start()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--count", "50", "--json", "--seed", "3")
    assert code == 0, err
    plain = json.loads(out)["record_bytes"]
    fake.acked.clear()
    code, out, err = await _cli("--target", f"127.0.0.1:{port}", "--count", "50", "--json", "--seed", "3",
                                "--extra-tags", "4", "--tag-bytes", "100")
    assert code == 0, err
    records = fake.acked_records()
    assert len(records) == 50
    for record in records:
        tags = validate_measurement(record)["tags"]
        assert sorted(tags) == ["site", "t01", "t02", "t03", "t04"]
        assert all(len(tags[f"t0{j}"]) == 100 for j in range(1, 5))
    sized = json.loads(out)["record_bytes"]
    assert sized - plain >= 4 * (100 + 4)  # value and key bytes of four tags at least


@pytest.mark.parametrize("argv", [["--duration", "5 minutes"], ["--report-interval", "-1"],
                                  ["--extra-tags", "65"], ["--tag-bytes", "2000"]])
def test_bad_durations_and_sizes_are_refused(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        _settings(*argv)


def test_durations_in_flags_and_environment() -> None:
    s = _settings("--duration", "1h30m", environ={"SLUICE_DRAIN_TIMEOUT": "2m", "SLUICE_GIVE_UP_AFTER": "90"})
    assert (s.duration, s.drain_timeout, s.give_up_after) == (5400.0, 120.0, 90.0)
