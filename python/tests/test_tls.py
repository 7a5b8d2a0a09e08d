"""TLS: certificates made by openssl (not by the project), a Python client and server over
TLS, and Python's own `ssl` module as an independent TLS client of the server."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

import steadfast


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 and localhost, made with openssl."""
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=test CA")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-out", str(d / "server.pem"), "-days", "2", "-extfile", str(d / "ext.cnf"))
    return d


def test_messages_over_tls(certs: Path) -> None:
    server = steadfast.Server(["127.0.0.1:0"], tls=(str(certs / "server.pem"), str(certs / "server.key")))
    try:
        with steadfast.Client(server.addresses[0], tls=str(certs / "ca.pem"), timeout=10) as client:
            r = client.send(b"secret")
            peer = server.accept(timeout=5)
            assert peer.recv(timeout=5).body == b"secret"
            r.wait(timeout=5)
        # A client that does not trust the CA is refused by its own TLS check.
        with pytest.raises(steadfast.ConnectionFailed):
            steadfast.Client(server.addresses[0], tls=True, timeout=10, max_attempts=1)
        # Python's ssl module completes a standard TLS 1.3 handshake with the server.
        host, port = server.addresses[0].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == "TLSv1.3"
                cert = tls.getpeercert()
                assert cert is not None and cert["subject"] == ((("commonName", "localhost"),),)
    finally:
        server.shutdown(drain=0.0)


def test_bad_tls_files_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "x.pem").write_text("not a certificate")
    with pytest.raises(steadfast.ConfigError):
        steadfast.Server(["127.0.0.1:0"], tls=(str(tmp_path / "x.pem"), str(tmp_path / "x.pem")))
    with pytest.raises(steadfast.ConfigError):
        steadfast.Client("127.0.0.1:1", tls=str(tmp_path / "missing.pem"))
