"""Retention: which daily indices expire, ``sluice retention`` against the stand-in (once
and with ``--every``), the ILM policy or its logged fallback, and a template that only a
newer version replaces."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch
from structlog.testing import capture_logs

from sluice import es as es_module
from sluice.es import (
    TEMPLATE_VERSION,
    ensure_lifecycle_policy,
    ensure_template,
    index_name,
    lifecycle_policy_name,
    make_client,
)
from sluice.retention import expired
from tests.parser.harness import ROOT, parser_env, wait_until
from tests.support.elasticsearch import EsService

TODAY = dt.date(2026, 3, 15)


def test_expired_keeps_today_and_the_window_before_it() -> None:
    """With 30 days, the 30 days before today stay; the 31st before goes. Only names of
    exactly our shape are touched, and 0 keeps everything."""
    names = [
        "p-measurement-2026.03.15",  # today
        "p-measurement-2026.02.13",  # 30 days before: kept
        "p-measurement-2026.02.12",  # 31 days before: expired
        "p-dead-2025.01.01",         # dead-letter events expire the same way
        "p-measurement-2027.01.01",  # future
        "p-a-b-2020.01.01",          # not <prefix>-<kind>-<day>
        "p-measurement-2020.02.31",  # not a date
        "p-measurement-2020.01.01-restored",
        "px-measurement-2020.01.01",  # another prefix
        "p-measurement",
    ]
    assert expired(names, "p", 30, TODAY) == ["p-dead-2025.01.01", "p-measurement-2026.02.12"]
    assert expired(names, "p", 0, TODAY) == []
    assert expired(names, "p", 1, TODAY) == [
        "p-dead-2025.01.01", "p-measurement-2026.02.12", "p-measurement-2026.02.13"]


@pytest.fixture
async def es(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(es_url, max_retries=0)
    try:
        yield client
    finally:
        await client.close()


def _day(days_ago: int) -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days_ago)


def _index(prefix: str, kind: str, day: dt.date) -> str:
    ts = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp() * 1000
    return index_name(prefix, kind, ts)


async def _names(es: AsyncElasticsearch, prefix: str) -> set[str]:
    found = await es.indices.get(index=f"{prefix}-*", allow_no_indices=True,
                                 expand_wildcards="open,closed")
    return set(found.body)


def _retention(es_url: str, prefix: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", "retention", "--es-url", es_url, "--index-prefix",
         prefix, *args], env=parser_env(), cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def test_sluice_retention_deletes_only_expired_daily_indices(
    es: AsyncElasticsearch, es_url: str, es_index_prefix: str
) -> None:
    """One-shot run: indices whose day is past the window are gone with their documents;
    the window, the future and names of another shape stay."""
    p = es_index_prefix
    await ensure_template(es, p)
    kept = {_index(p, "measurement", _day(0)), _index(p, "measurement", _day(7)),
            _index(p, "dead", _day(7)), _index(p, "measurement", _day(-3)),
            f"{p}-a-b-2001.01.01"}
    gone = {_index(p, "measurement", _day(8)), _index(p, "dead", _day(400)),
            _index(p, "other", _day(9))}
    for name in kept | gone:
        await es.index(index=name, document={"id": name, "value": 1.0}, refresh=True)
    closed = _index(p, "other", _day(9))
    await es.indices.close(index=closed)  # closing an index does not exempt it
    assert await _names(es, p) == kept | gone
    proc = _retention(es_url, p, "--retention-days", "7")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert '"retention_done"' in out and '"deleted": 3' in out
    assert await _names(es, p) == kept


async def test_retention_every_runs_until_sigterm(
    es: AsyncElasticsearch, es_url: str, es_index_prefix: str
) -> None:
    """``--every`` (the compose service's mode) deletes at once, then waits; SIGTERM ends
    it with status 0."""
    p = es_index_prefix
    old = _index(p, "measurement", _day(31))
    await es.indices.create(index=old)
    proc = _retention(es_url, p, "--every", "86400")
    try:
        async def deleted() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            return old not in await _names(es, p)

        await wait_until(deleted, 60, "the expired index to be deleted")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_ilm_policy_where_available_and_a_logged_fallback_elsewhere(
    es: AsyncElasticsearch, es_index_prefix: str, es_service: EsService,
) -> None:
    """A real Elasticsearch gets the policy ``<prefix>-retention`` with a delete phase and
    the template names it; the stand-in has no ILM: the fallback is logged and the
    template carries no lifecycle setting (which the stand-in would refuse)."""
    with capture_logs() as logs:
        await ensure_template(es, es_index_prefix, retention_days=12)
    got = await es.indices.get_index_template(name=es_index_prefix)
    (entry,) = got["index_templates"]
    settings = entry["index_template"]["template"]["settings"]["index"]
    assert entry["index_template"]["version"] == TEMPLATE_VERSION
    if es_service.local:
        (fallback,) = [entry for entry in logs if entry["event"] == "ilm_unavailable"]
        assert "sluice retention" in fallback["note"]
        assert await ensure_lifecycle_policy(es, es_index_prefix, 12) is None
        assert "lifecycle" not in settings
    else:
        name = lifecycle_policy_name(es_index_prefix)
        try:
            policy = await es.ilm.get_lifecycle(name=name)
            phases = policy[name]["policy"]["phases"]
            assert phases["delete"]["min_age"] == "12d"
            assert settings["lifecycle"]["name"] == name
        finally:
            await es.indices.delete_index_template(name=es_index_prefix)
            await es.ilm.delete_lifecycle(name=name)
    # An index created now gets the template (and no setting the store refuses).
    index = _index(es_index_prefix, "measurement", _day(0))
    await es.index(index=index, document={"id": "x", "value": 1.0}, refresh=True)


async def test_the_template_is_only_replaced_by_a_newer_version(
    es: AsyncElasticsearch, es_index_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older and newer processes starting in any order during a rolling update: the
    newest template stays; an older installed one is replaced."""
    p = es_index_prefix

    async def installed() -> tuple[int, dict[str, object]]:
        (entry,) = (await es.indices.get_index_template(name=p))["index_templates"]
        return entry["index_template"]["version"], entry["index_template"].get("_meta", {})

    body = es_module.index_template(p)
    await es.indices.put_index_template(name=p, **{**body, "version": 1, "_meta": {"old": True}})
    await ensure_template(es, p)
    assert (await installed())[0] == TEMPLATE_VERSION

    newer = TEMPLATE_VERSION + 1
    await es.indices.put_index_template(
        name=p, **{**body, "version": newer, "_meta": {"newer": True}})
    await ensure_template(es, p)  # this process is the older one now
    assert await installed() == (newer, {"newer": True})

    # An older process (TEMPLATE_VERSION - 1) after ours: ours stays.
    await es.indices.delete_index_template(name=p)
    await ensure_template(es, p)
    monkeypatch.setattr(es_module, "TEMPLATE_VERSION", TEMPLATE_VERSION - 1)
    await ensure_template(es, p)
    assert (await installed())[0] == TEMPLATE_VERSION


async def test_concurrent_installs_end_with_the_newest(
    es: AsyncElasticsearch, es_index_prefix: str
) -> None:
    """Many processes installing at once: exactly one version ends up installed, ours."""
    await asyncio.gather(*(ensure_template(es, es_index_prefix) for _ in range(8)))
    (entry,) = (await es.indices.get_index_template(name=es_index_prefix))["index_templates"]
    assert entry["index_template"]["version"] == TEMPLATE_VERSION
