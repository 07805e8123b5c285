"""The TLS deployment's shipped files, checked without Docker: nginx accepts
config/nginx/nginx-tls.conf with real certificates from scripts/make-certs.sh, and those
certificates verify against their CA for the names the services are reached by."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_nginx_config import MODULE_DIRS, nginx_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "nginx" / "nginx-tls.conf"
MAKE_CERTS = ROOT / "scripts" / "make-certs.sh"


def make_certs(directory: Path, *specs: str) -> None:
    subprocess.run([str(MAKE_CERTS), str(directory), *specs], check=True, capture_output=True, timeout=120)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A TLS handshake in memory; raises ssl.SSLError when the client rejects the server."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=name)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for label, side in (("client", client_side), ("server", server_side)):
            if not done[label]:
                try:
                    side.do_handshake()
                    done[label] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_make_certs_names_and_chain(tmp_path: Path) -> None:
    """Each certificate verifies against the CA for its own names, not for others."""
    make_certs(tmp_path, "server,nginx", "api")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    for name, good in (("server", ("server", "nginx", "localhost", "127.0.0.1")), ("api", ("api", "localhost"))):
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
        for host in good:
            handshake(server, client, host)
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server, client, "rabbitmq")
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0, "keys must be private"


def test_shipped_nginx_tls_config_is_valid(tmp_path: Path) -> None:
    nginx = nginx_binary()
    tls = tmp_path / "tls"
    make_certs(tls, "nginx")
    text = CONFIG.read_text().replace("/run/sluice/tls/", f"{tls}/")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    (tmp_path / "logs").mkdir()
    modules = next((Path(p) for p in MODULE_DIRS if Path(p).is_dir()), None)
    if modules is not None:
        (tmp_path / "modules").symlink_to(modules)
    proc = subprocess.run([nginx, "-t", "-p", f"{tmp_path}/", "-e", "stderr", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "test is successful" in output, output
