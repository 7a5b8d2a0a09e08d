"""Prometheus metrics of the process's servers."""

from __future__ import annotations

from typing import Optional, Protocol

from ._steadfast import ServerCore, enable_metrics, render_metrics


class _AnyServer(Protocol):
    """A :class:`steadfast.Server` or a :class:`steadfast.aio.Server`."""

    @property
    def _core(self) -> ServerCore: ...


def metrics_text(server: Optional[_AnyServer] = None) -> str:
    """The metrics of the process's servers in Prometheus's text exposition format (0.0.4),
    for a ``/metrics`` endpoint of the application's own: the counters (messages, bytes,
    connections, resumes, refusals by reason), the round-trip histogram, and — read from
    ``server`` when one is given — the gauges (sessions live and lingering, messages in
    outboxes, memory budget used), which describe one server. Raises
    :class:`steadfast.ConfigError` before :func:`enable_metrics`.

    ::

        steadfast.enable_metrics(node="eu-1")
        server = steadfast.Server(["0.0.0.0:7000"])
        ...
        body = steadfast.metrics_text(server)   # serve it at /metrics
    """
    if server is not None:
        server._core.record_gauges()
    return render_metrics()


__all__ = ["enable_metrics", "metrics_text"]
