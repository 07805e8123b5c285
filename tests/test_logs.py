from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
from sluice.logs import RateLimitedLog, configure_logging, get_logger
configure_logging("server", "host-7", "info")
log = get_logger("t")
log.info("started", port=7000)
logging.getLogger("aiormq.connection").warning("library says %s", "hi")
limited = RateLimitedLog(log, interval=60)
for _ in range(5):
    limited.warning("bad_frame", "rejected", code="bad_frame")
"""


def test_every_line_is_json_with_service_and_instance_including_library_logs() -> None:
    """Off a TTY, structlog's and the standard library's lines are both JSON with identity."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True)
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["started", "library says hi", "rejected"]
    assert all(line["service"] == "server" and line["instance"] == "host-7" for line in lines)
    assert lines[0]["port"] == 7000
    assert lines[1]["logger"] == "aiormq.connection"
    assert lines[1]["level"] == "warning"


def test_rate_limited_log_reports_how_many_it_suppressed() -> None:
    class Capture:
        def __init__(self) -> None:
            self.calls: list[dict[str, object]] = []

        def warning(self, event: str, **fields: object) -> None:
            self.calls.append({"event": event, **fields})

    from sluice.logs import RateLimitedLog

    cap = Capture()
    limited = RateLimitedLog(cap, interval=0.0)
    limited.warning("k", "e")
    assert len(cap.calls) == 1
    slow = RateLimitedLog(cap, interval=3600)
    for _ in range(4):
        slow.warning("k", "e")
    assert len(cap.calls) == 2


LIBRARY_SCRIPT = """
import logging, sys
from sluice.logs import configure_logging
configure_logging("parser", "host-1", sys.argv[1])
logging.getLogger("elastic_transport.transport").info("POST http://es:9200/_bulk [status:200]")
logging.getLogger("aiohttp.access").info("GET /metrics 200")
logging.getLogger("elastic_transport.node_pool").warning("Node <es> has failed for 1 times")
logging.getLogger("sluice.parser").info("consuming")
"""


def _events(level: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LIBRARY_SCRIPT, level], capture_output=True,
                         text=True, timeout=60, check=True)
    return [json.loads(line)["event"] for line in out.stderr.splitlines()]


def test_library_request_lines_stay_out_of_the_log_unless_debugging() -> None:
    """One INFO line per Elasticsearch request or HTTP access would drown the service's own
    events; the libraries' warnings still reach the log at every level."""
    assert _events("info") == ["Node <es> has failed for 1 times", "consuming"]
    assert _events("debug") == [
        "POST http://es:9200/_bulk [status:200]", "GET /metrics 200",
        "Node <es> has failed for 1 times", "consuming",
    ]
