"""The shared harness of the Python tests: the `steadfast` binary (the Rust CLI, for fault
proxies and Rust peers), child processes stopped by their PID, servers shut down after use."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

import steadfast

ROOT = Path(__file__).resolve().parents[2]


def steadfast_bin() -> str:
    """The CLI binary: $STEADFAST_BIN, else target/debug/steadfast, built if missing (a
    missing tool is an error, never a skip)."""
    env = os.environ.get("STEADFAST_BIN")
    if env:
        return env
    path = ROOT / "target" / "debug" / "steadfast"
    if not path.exists():
        subprocess.run(["cargo", "build", "-p", "steadfast-cli"], cwd=ROOT, check=True)
    return str(path)


class Proc:
    """A child process whose stderr lines are read as they come; killed when stopped."""

    def __init__(
        self,
        args: List[str],
        stdin: Optional[int] = subprocess.DEVNULL,
        env: Optional[Dict[str, str]] = None,
        collect_stdout: bool = False,
    ) -> None:
        self.p = subprocess.Popen(
            args,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        #: stdout's lines, when collected (a reader keeps the pipe from filling up).
        self.out: List[str] = []
        if collect_stdout:
            threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            self.out.append(raw.decode(errors="replace").rstrip("\n"))

    def _read(self) -> None:
        assert self.p.stderr is not None
        for raw in self.p.stderr:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        """The first stderr line containing `needle` (a bound against a hang, not a timing
        check)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no stderr line with {needle!r} from {self.p.args!r}") from None
            if needle in line:
                return line

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        for f in (self.p.stdout, self.p.stderr, self.p.stdin):
            if f is not None:
                f.close()


def addr_after(line: str, marker: str) -> str:
    return line[line.index(marker) + len(marker):].split()[0]


@pytest.fixture
def procs() -> Iterator[List[Proc]]:
    """Child processes started by a test, killed at its end."""
    started: List[Proc] = []
    yield started
    for p in started:
        p.stop()


def start_chaos(procs: List[Proc], upstream: str, *options: str) -> Tuple[str, Proc]:
    """A fault proxy (the Rust CLI's) in front of `upstream`: its address, and the process
    (whose `out` lists a line per fault)."""
    p = Proc(
        [steadfast_bin(), "chaos", "--listen", "127.0.0.1:0", "--upstream", upstream, *options],
        collect_stdout=True,
    )
    procs.append(p)
    return addr_after(p.wait_for("chaos proxy on"), "chaos proxy on "), p


def start_python(procs: List[Proc], script: str, *args: str) -> Proc:
    """A Python child process running `script` (a file in tests/)."""
    p = Proc([sys.executable, str(Path(__file__).parent / script), *args])
    procs.append(p)
    return p


@pytest.fixture
def server() -> Iterator[steadfast.Server]:
    s = steadfast.Server(["127.0.0.1:0"])
    yield s
    s.shutdown(drain=0.0)
