"""Prometheus metrics from Python: ``enable_metrics`` and ``metrics_text``, read back with
prometheus_client's own parser (in a fresh interpreter: the recorder is one per process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_metrics_text_counts_the_servers_traffic() -> None:
    script = Path(__file__).parent / "metrics_check.py"
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "metrics ok"
