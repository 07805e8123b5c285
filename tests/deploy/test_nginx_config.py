"""The shipped nginx configuration (config/nginx/nginx.conf) is valid on Debian's nginx, checked
with ``nginx -t`` outside Docker: a cheap guard that runs in the normal suite (no ``docker``
marker), so a directive Debian's nginx 1.22 lacks (``resolve`` on upstream servers, for one)
fails here before it fails in the compose stack.

Inside the compose stack the file is mounted as /etc/nginx/nginx.conf; its only reference to
the host is the include of /etc/nginx/modules-enabled/*.conf, which Debian's
libnginx-mod-stream fills with the stream module's load_module line (the official image has the
module built in and no such file). On a Debian host that include finds the same file, so it is
kept. Its load_module lines name paths relative to nginx's prefix (``modules/...``; Debian's
prefix /usr/share/nginx has ``modules`` linking to /usr/lib/nginx/modules), so the private
prefix the test runs nginx with gets the same link. The pid file moves into that prefix too;
nothing outside it is touched. Docker's resolver address (127.0.0.11) is only used at connection time,
so nothing else needs substituting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "nginx" / "nginx.conf"
MODULES_INCLUDE = "include /etc/nginx/modules-enabled/*.conf;"
MODULE_DIRS = ("/usr/share/nginx/modules", "/usr/lib/nginx/modules")
INSTALL_HINT = "install Debian's nginx with the stream module: apt-get install nginx-light libnginx-mod-stream"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(f"nginx is not installed; {INSTALL_HINT}", pytrace=False)
    return found


def test_shipped_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = nginx_binary()
    text = CONFIG.read_text()
    assert MODULES_INCLUDE in text, "the config no longer loads Debian's stream module include"
    assert "pid /tmp/nginx.pid;" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    (tmp_path / "logs").mkdir()
    modules = next((Path(p) for p in MODULE_DIRS if Path(p).is_dir()), None)
    if modules is not None:
        (tmp_path / "modules").symlink_to(modules)
    proc = subprocess.run(
        [nginx, "-t", "-p", f"{tmp_path}/", "-e", "stderr", "-c", str(conf)],
        capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    hint = ""
    if 'unknown directive "stream"' in output:
        hint = f"\nnginx has no stream module; {INSTALL_HINT}"
    assert proc.returncode == 0, f"nginx -t rejected {CONFIG}:\n{output}{hint}"
    assert "test is successful" in output, output
