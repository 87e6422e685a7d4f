"""Router metrics (prometheus-client) and the ``/metrics`` + ``/healthz`` endpoint.

Labels are agency ids, subscriber ids and reason codes — never anything about a
child. Each router process has its own :class:`RouterMetrics` on its own
registry, so tests and several in-process routers do not share counters.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "safeshare_events_consumed", "Ingest events consumed", ["agency"], registry=r
        )
        self.shared = Counter(
            "safeshare_shares", "Minimised copies committed to a feed", ["subscriber"], registry=r
        )
        self.withheld = Counter(
            "safeshare_withheld", "Decisions not to share", ["subscriber", "reason"], registry=r
        )
        self.quarantined = Counter(
            "safeshare_quarantined", "Messages quarantined", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "safeshare_duplicates", "Repeated event ids not shared again", registry=r
        )
        self.audit_leaves = Counter("safeshare_audit_leaves", "Audit leaves committed", registry=r)
        self.latency = Histogram(
            "safeshare_end_to_end_latency_seconds",
            "From an event's reported_at to its share committed to the feed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.txn_duration = Histogram(
            "safeshare_transaction_duration_seconds",
            "Duration of one routing transaction (begin to commit)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.txn_aborted = Counter(
            "safeshare_transactions_aborted", "Routing transactions aborted", registry=r
        )
        self.consumer_lag = Gauge(
            "safeshare_consumer_lag", "Ingest records not yet routed", ["topic"], registry=r
        )
        self.checkpoint_lag = Gauge(
            "safeshare_audit_checkpoint_lag",
            "Audit leaves committed but not yet covered by a signed checkpoint",
            registry=r,
        )
        self.producer_restarts = Counter(
            "safeshare_producer_restarts",
            "Transactional producers replaced after a transaction could not be aborted",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "safeshare_assigned_partitions",
            "Ingest and consent partitions this router instance owns in its group",
            registry=r,
        )
        self.last_commit = Gauge(
            "safeshare_last_commit_timestamp_seconds",
            "Wall time of the last committed routing transaction",
            registry=r,
        )


class _QuietServer(ThreadingHTTPServer):
    """An HTTP server that lets a client hang up without a traceback.

    A health probe or a scraper that disconnects before its answer is written
    (a timeout on its side) makes the write fail with BrokenPipeError or
    ConnectionResetError; socketserver prints a traceback for that to
    stderr. It is the client's business: the answer is dropped quietly.
    """

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            return
        super().handle_error(request, client_address)


class HasRegistry(Protocol):
    """What /metrics serves: any service's metrics on their own registry."""

    registry: CollectorRegistry


class HealthServer:
    """Serves ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON)."""

    def __init__(
        self,
        metrics: HasRegistry,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/metrics":
                    body = generate_latest(registry)
                    self._send(200, CONTENT_TYPE_LATEST, body)
                elif self.path == "/healthz":
                    ok, detail = health()
                    body = json.dumps({"ok": ok, **detail}).encode()
                    self._send(200 if ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # access logs are noise here; metrics count what matters

        self._server = _QuietServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
