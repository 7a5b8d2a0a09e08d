"""No leaked threads or sockets: 30 rounds of servers (with hooks and routes), clients and
asyncio event loops leave the process as the first round left it, and it exits by itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_rounds_leave_no_sockets_or_threads_and_the_process_exits() -> None:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "leak_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    _, fds0, fds1, _, threads0, threads1 = out.stdout.split()
    assert fds1 == fds0, out.stdout
    assert threads1 == threads0, out.stdout
