from __future__ import annotations

import pytest

from sluice.metrics import Registry


def test_counter_with_labels_renders_prometheus_text() -> None:
    reg = Registry("sluice_test")
    errors = reg.counter("errors_total", "errors by code", ("code",))
    errors.inc(1, "bad_frame")
    errors.inc(2, "bad_frame")
    errors.inc(1, 'we"ird')
    text = reg.render()
    assert "# TYPE sluice_test_errors_total counter" in text
    assert 'sluice_test_errors_total{code="bad_frame"} 3' in text
    assert 'sluice_test_errors_total{code="we\\"ird"} 1' in text
    assert errors.total() == 4


def test_histogram_buckets_are_cumulative() -> None:
    reg = Registry("x")
    h = reg.histogram("latency_seconds", "latency", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 5.0):
        h.observe(v)
    lines = reg.render().splitlines()
    assert 'x_latency_seconds_bucket{le="0.1"} 1' in lines
    assert 'x_latency_seconds_bucket{le="1"} 3' in lines
    assert 'x_latency_seconds_bucket{le="+Inf"} 4' in lines
    assert "x_latency_seconds_count 4" in lines
    assert "x_latency_seconds_sum 6.05" in lines


def test_gauge_reads_callback_at_render_time() -> None:
    reg = Registry("x")
    box = [3]
    reg.gauge("depth", "depth", read=lambda: box[0])
    box[0] = 7
    assert "x_depth 7" in reg.render().splitlines()


def test_wrong_label_count_and_duplicate_names_are_refused() -> None:
    reg = Registry("x")
    c = reg.counter("c", "c", ("a",))
    with pytest.raises(ValueError, match="labels"):
        c.inc(1)
    with pytest.raises(ValueError, match="twice"):
        reg.counter("c", "again")
