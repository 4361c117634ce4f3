"""Prometheus metrics and a JSON health check for one live driver.

Every driver owns its :class:`~prometheus_client.CollectorRegistry` (never the process
default registry: two drivers in one test process must not share counters), and the
exposition format is prometheus-client's own. The HTTP endpoint listens on 127.0.0.1
unless told otherwise (``--metrics-host``); it serves:

- ``/metrics``: the registry, in the Prometheus text format;
- ``/health``: JSON ``{status, uptime_s, feed, lag_ms, reconnects, gaps, guards,
  last_cycle, ...}``; HTTP 200 while the feed is live, 503 otherwise.

The event loop updates the metrics (prometheus-client's values are thread-safe) and
publishes the health document as one immutable object the server thread only reads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from perpsim.core.events import RunEvent

__all__ = ["BulkHistogram", "LiveMetrics", "MetricsServer"]

_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CYCLE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_KINDS = ("trade", "quote", "book", "book_reset", "funding", "mark", "status", "timer")


class BulkHistogram(Collector):
    """A Prometheus histogram fed many observations at a time, exposed through
    prometheus-client's collector API.

    ``Histogram.observe`` takes a lock and updates two values, about 3 µs: for the feed
    lag, observed once per message, that was a tenth of what a message cost the event
    loop. The driver adds a recorder chunk's lags here at once (``LiveDriver._on_chunk``).
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, np.int64)  # the last one: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()  # observe_many on the loop, collect on the server thread
        registry.register(self)

    def observe_many(self, values: Iterable[float] | np.ndarray[Any, Any]) -> None:
        v = np.asarray(values, dtype=np.float64)
        if not v.size:
            return
        counts = np.bincount(np.searchsorted(self.bounds, v, side="left"), minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(v.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(repr(float(b)), c) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return self.collect()


class LiveMetrics:
    """The live driver's metrics, all in one private registry.

    Counters that mirror a component's own counters (feed, recorder) are advanced by
    :meth:`sync_counter` with the difference since the last call, so the components
    stay free of Prometheus.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("perpsim_events", "Market rows dispatched to the engine, by kind", ["kind"], registry=r)
        self.messages = Counter("perpsim_feed_messages", "Feed messages received", registry=r)
        self.feed_bytes = Counter("perpsim_feed_bytes", "Feed bytes received", registry=r)
        self.lag = BulkHistogram(
            "perpsim_feed_lag_seconds", "recv_ts - ts of market rows (venue to us)", _LAG_BUCKETS, registry=r
        )
        self.cycle = Histogram(
            "perpsim_cycle_duration_seconds", "Wall time of one bot cycle", buckets=_CYCLE_BUCKETS, registry=r
        )
        self.run_events = Counter(
            "perpsim_run_events", "Run events emitted by the engine, by kind", ["kind"], registry=r
        )
        self.orders = Counter("perpsim_orders", "Orders accepted by the paper venue", registry=r)
        self.fills = Counter("perpsim_fills", "Paper fills", registry=r)
        self.rejects = Counter("perpsim_rejects", "Orders rejected", registry=r)
        self.reconnects = Counter("perpsim_feed_reconnects", "Feed reconnections", registry=r)
        self.disconnects = Counter("perpsim_feed_disconnects", "Feed disconnections (incl. stale)", registry=r)
        self.gaps = Counter("perpsim_feed_gaps", "Sequence gaps seen", registry=r)
        self.resyncs = Counter("perpsim_feed_resyncs", "Level2 resubscriptions after a gap", registry=r)
        self.malformed = Counter("perpsim_feed_malformed", "Malformed feed messages skipped", registry=r)
        self.stale = Counter("perpsim_feed_stale", "Connections dropped as stale", registry=r)
        self.unsubscribed = Counter(
            "perpsim_feed_unsubscribed", "Rows of products the session did not subscribe to, dropped", registry=r
        )
        self.equity = Gauge("perpsim_equity", "Paper equity (settlement currency)", registry=r)
        self.cash = Gauge("perpsim_cash", "Paper cash (settlement currency)", registry=r)
        self.position = Gauge(
            "perpsim_position", "Position per symbol (base units or contracts)", ["symbol"], registry=r
        )
        self.guard = Gauge("perpsim_guard_active", "1 while a guard is tripped", ["guard"], registry=r)
        self.feed_up = Gauge("perpsim_feed_up", "1 while the feed is live", registry=r)
        self.recorder_rows = Counter("perpsim_recorder_rows", "Rows written to the recording", registry=r)
        self.recorder_bytes = Counter("perpsim_recorder_bytes", "Bytes written to the recording", registry=r)
        self.recorder_flushes = Counter("perpsim_recorder_flushes", "Recorder flushes", registry=r)
        self.recorder_errors = Counter("perpsim_recorder_errors", "Recorder write errors", registry=r)
        self.uptime = Gauge("perpsim_uptime_seconds", "Seconds since the driver started", registry=r)
        self._last: dict[str, float] = {}
        self._health: bytes = b"{}"
        self._healthy = False

    def count_run_events(self, events: list[RunEvent]) -> None:
        for ev in events:
            self.run_events.labels(ev.kind).inc()
            if ev.kind == "order":
                self.orders.inc()
            elif ev.kind == "fill":
                self.fills.inc()
            elif ev.kind == "reject":
                self.rejects.inc()

    def sync_counter(self, counter: Counter, key: str, value: float) -> None:
        """Advance ``counter`` to a component's running total ``value``."""
        delta = value - self._last.get(key, 0.0)
        if delta > 0:
            counter.inc(delta)
            self._last[key] = value

    def publish_health(self, doc: dict[str, Any], healthy: bool) -> None:
        """Replace the ``/health`` document (called from the event loop)."""
        self._health = json.dumps(doc, sort_keys=True, default=str).encode()
        self._healthy = healthy

    def health(self) -> tuple[bool, bytes]:
        return self._healthy, self._health


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news."""


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        t.start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class MetricsServer:
    """Serve ``/metrics`` and ``/health`` for one :class:`LiveMetrics` on a daemon thread.

    Args:
        metrics: what to serve.
        host: the address to bind (127.0.0.1 unless the operator exposes it).
        port: the TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    """

    def __init__(self, metrics: LiveMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._prom = make_wsgi_app(metrics.registry)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") == "/health":
            ok, body = self.metrics.health()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self._prom(environ, start_response)  # type: ignore[no-any-return]

    def start(self) -> int:
        """Bind and serve; returns the port."""
        self._server = make_server(self.host, self.port, self._app, _ThreadingWSGIServer, handler_class=_Quiet)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="perpsim-metrics", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
