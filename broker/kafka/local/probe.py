"""Is a broker ready? One DescribeCluster question, asked quietly.

Readiness is asked of the broker (a controller and an unfenced broker), never
assumed after a sleep: the harness, :mod:`broker.kafka.cluster` and the CLI all
ask through :func:`probe_broker`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from broker.kafka.security import Credentials, resolve


def probe_broker(
    bootstrap: str,
    timeout_s: float,
    *,
    credentials: Credentials | None = None,
    **client_config: Any,
) -> str | None:
    """Ask a broker whether it is ready; None if it is, else why not.

    Ready means DescribeCluster answers with a controller and at least one
    unfenced broker: then topics can be created and groups joined.
    ``credentials``: who asks (default: the environment's, see
    :mod:`broker.kafka.security`). ``client_config``: extra KafkaAdminClient
    settings, applied last.
    """
    # Imported here: kafka-python is heavy and only needed once a broker runs.
    from kafka.admin import KafkaAdminClient

    cfg = resolve(credentials).client_config()
    cfg.update(client_config)
    ms = max(int(timeout_s * 1000), 200)
    with _quiet_kafka_logs():
        return _probe_once(KafkaAdminClient, bootstrap, ms, cfg)


def _probe_once(
    client_cls: Any, bootstrap: str, ms: int, client_config: Mapping[str, Any]
) -> str | None:
    from broker.kafka._kafka_python import AuthFailureRecorder

    recorder = AuthFailureRecorder()
    try:
        admin = client_cls(
            bootstrap_servers=bootstrap,
            client_id="safeshare-probe",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
            reconnect_backoff_max_ms=200,
            **{"kafka_client": recorder, **client_config},
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
        auth = recorder.auth_failure()
        if auth is not None:
            return f"the broker refused the login: {auth}"
        return f"{type(exc).__name__}: {exc}"
    try:
        info = admin.describe_cluster()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()
    brokers = info.get("brokers") or []
    if not brokers:
        return "no brokers registered"
    if all(b.get("is_fenced") for b in brokers):
        return "broker still fenced"
    if info.get("controller_id", -1) is None or info.get("controller_id", -1) < 0:
        return "no active controller"
    return None


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


# kafka-python logs every refused connection at ERROR/WARNING; while we probe
# a broker that is still starting, those are expected and only bury real output.
_NOISY_LOGGERS = (
    "kafka.net.manager", "kafka.net.connection", "kafka.net.transport",
    "kafka.net.selector", "kafka.cluster", "kafka.admin.client",
)


@contextmanager
def _quiet_kafka_logs() -> Iterator[None]:
    flt = _DropAll()
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)
