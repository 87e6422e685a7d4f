"""The one way to get a Kafka cluster: external, else testcontainers, else our own.

Order (docs/DESIGN.md, "Real parts, started by the project itself"):

1. ``SAFESHARE_BOOTSTRAP`` (``settings.bootstrap``): a cluster someone runs
   for us. If it is set but does not answer we fail instead of quietly testing
   against something else: whoever set it wanted *that* cluster.
2. testcontainers ``KafkaContainer``, only if a Docker daemon answers a ping
   within a second or two (and ``settings.try_docker``; ``SAFESHARE_NO_DOCKER``
   turns it off). These machines have a docker CLI but no daemon, so the
   check must be quick and must not hang.
3. :class:`broker.kafka.local.LocalKafka`: Kafka jars from Maven Central run
   as one JVM. A broker already running from ``make kafka-up`` is reused and
   left running; one started here is stopped by :meth:`Cluster.close`.

If none can be had, :class:`ClusterUnavailableError` says why each way failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.config import Settings
from broker.kafka.exceptions import ClusterUnavailableError, KafkaError
from broker.kafka.local import LocalKafka, probe_broker
from broker.kafka.structs import Closeable

log = logging.getLogger(__name__)

# testcontainers' own default image (Confluent Platform 7.6 = Kafka 3.6), run in
# KRaft mode. Untested here: these machines have no Docker daemon.
TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.6.0"
DOCKER_PING_TIMEOUT_S = 2
EXTERNAL_READY_TIMEOUT_S = 30.0


@dataclass
class Cluster(Closeable):
    """A Kafka cluster to talk to. ``close()`` (or leaving ``with``) stops it if it
    was started for us."""

    bootstrap: str
    kind: str
    """``external``, ``testcontainers`` or ``local``."""
    description: str
    _closer: Callable[[], object] | None = field(default=None, repr=False)

    @property
    def owned(self) -> bool:
        """True if closing this cluster stops it (it was started for this caller)."""
        return self._closer is not None

    def close(self) -> None:
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()


def obtain_cluster(
    settings: Settings,
    *,
    leave_running: bool = False,
    external_timeout_s: float = EXTERNAL_READY_TIMEOUT_S,
) -> Cluster:
    """A ready cluster, by the precedence above.

    ``leave_running``: a local broker started here is not stopped by
    ``close()``. ``external_timeout_s``: how long SAFESHARE_BOOTSTRAP may take
    to answer (it may itself be starting).
    """
    reasons: list[str] = []

    if settings.bootstrap:
        why = probe_broker(
            settings.bootstrap, external_timeout_s,
            security_protocol=settings.security_protocol,
        )
        if why is None:
            return Cluster(
                settings.bootstrap, "external", f"SAFESHARE_BOOTSTRAP={settings.bootstrap}"
            )
        raise ClusterUnavailableError(
            f"SAFESHARE_BOOTSTRAP={settings.bootstrap} does not answer ({why}); "
            "unset it to use testcontainers or the project's local broker"
        )
    reasons.append("external: SAFESHARE_BOOTSTRAP is not set")

    if not settings.try_docker:
        reasons.append("testcontainers: disabled (SAFESHARE_NO_DOCKER)")
    else:
        why_not = _docker_unavailable()
        if why_not is not None:
            reasons.append(f"testcontainers: {why_not}")
        else:
            try:
                return _start_container()
            except Exception as exc:  # noqa: BLE001 - fall through to the local broker
                log.warning("testcontainers Kafka failed: %s", exc)
                reasons.append(f"testcontainers: {type(exc).__name__}: {exc}")

    local = LocalKafka.from_settings(settings)
    try:
        state = local.start()
    except KafkaError as exc:
        reasons.append(f"local: {exc}")
    except OSError as exc:
        reasons.append(f"local: {type(exc).__name__}: {exc}")
    else:
        how = "started" if local.started_here else "reused"
        return Cluster(
            state.bootstrap, "local",
            f"local Kafka {state.version} ({how}, pid {state.pid}, {local.instance_dir})",
            _closer=local.stop if local.started_here and not leave_running else None,
        )

    raise ClusterUnavailableError("no Kafka cluster could be had:\n  " + "\n  ".join(reasons))


def _docker_unavailable() -> str | None:
    """None if a Docker daemon answers a ping quickly, else why not."""
    try:
        import docker
    except ImportError as exc:
        return f"docker SDK not installed ({exc})"
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - no socket, bad DOCKER_HOST, ...
        return f"no Docker daemon answers ({type(exc).__name__}: {exc})"
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        return f"no Docker daemon answers ({type(exc).__name__}: {exc})"
    finally:
        client.close()
    return None


def _start_container() -> Cluster:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # older testcontainers
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer(TESTCONTAINERS_IMAGE).with_kraft()
    # Same one-node necessities as the local broker (see local.py).
    for key, value in {
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }.items():
        container.with_env(key, value)
    container.start()
    try:
        bootstrap = str(container.get_bootstrap_server())
        why = probe_broker(bootstrap, 60.0)
        if why is not None:
            raise KafkaError(f"container Kafka at {bootstrap} does not answer: {why}")
    except BaseException:
        container.stop()
        raise
    return Cluster(bootstrap, "testcontainers", f"{TESTCONTAINERS_IMAGE} (testcontainers)",
                   _closer=container.stop)
