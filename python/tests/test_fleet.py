"""A fleet from Python: two Python server processes share their sessions in a private
PostgreSQL (started here with initdb/pg_ctl, stopped by its PID). The first is killed with
SIGKILL mid-stream; the client, given both addresses, resumes on the second, which carries
the session on from the database: every message exactly once, in order."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

import steadfast

from conftest import Proc, start_python

TOTAL = 4_000


def _program(name: str) -> str:
    for v in (17, 16, 15):
        p = Path(f"/usr/lib/postgresql/{v}/bin/{name}")
        if p.exists():
            return str(p)
    found = shutil.which(name)
    assert found, f"{name} is not installed (.ci/run installs Debian's postgresql)"
    return found


def _as_owner(args: List[str]) -> List[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else args


@pytest.fixture
def postgres() -> Iterator[str]:
    """A private PostgreSQL on loopback; its URL."""
    d = Path(tempfile.mkdtemp(prefix="steadfast-py-pg-"))
    if os.getuid() == 0:
        shutil.chown(d, "postgres")
    data = d / "data"
    subprocess.run(
        _as_owner([_program("initdb"), "-D", str(data), "-U", "steadfast", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        _as_owner([
            _program("pg_ctl"), "-D", str(data), "-l", str(d / "log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1", "start",
        ]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgres://steadfast@127.0.0.1:{port}/postgres"
    finally:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)
        for _ in range(600):
            if not Path(f"/proc/{pid}").exists():
                break
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            import time

            time.sleep(0.05)
        shutil.rmtree(d, ignore_errors=True)


def test_a_fleet_member_killed_with_sigkill_hands_the_session_on(postgres: str, procs: List[Proc]) -> None:
    a = start_python(procs, "durable_server.py", postgres, "127.0.0.1:0", str(TOTAL), "node-a")
    addr_a = a.wait_for("ready ").split()[-1]
    b = start_python(procs, "durable_server.py", postgres, "127.0.0.1:0", str(TOTAL), "node-b")
    addr_b = b.wait_for("ready ").split()[-1]
    got: List[int] = []
    with steadfast.Client([addr_a, addr_b], name="kill-test", timeout=10) as client:
        a.wait_for("resuming at 1")
        # Some messages arrive (so some were committed), then the kill.
        while len(got) < 100:
            got.extend(int(m.body.split()[1]) for m in client.recv_many(100, timeout=30))
        a.p.send_signal(signal.SIGKILL)
        a.p.wait()
        resumed_at = int(b.wait_for("resuming at", timeout=60).split()[-1])
        assert 100 < resumed_at <= TOTAL + 1
        while len(got) < TOTAL:
            got.extend(int(m.body.split()[1]) for m in client.recv_many(1000, timeout=60))
        b.wait_for("all acknowledged", timeout=60)
        assert client.try_recv() is None
    assert got == list(range(1, TOTAL + 1))
