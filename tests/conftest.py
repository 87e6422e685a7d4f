"""Shared pytest fixtures.

Kafka fixtures (integration tests run against a real broker, never a mock):

* ``kafka_cluster`` / ``kafka_bootstrap`` (session): the cluster from
  :func:`broker.kafka.cluster.obtain_cluster`: ``SAFESHARE_BOOTSTRAP``, else
  testcontainers if a Docker daemon answers, else the project's local broker.
  A local broker already running (``make kafka-up``) is reused and left
  running; one started for this session is stopped at its end. If no cluster
  can be had the fixture *fails* with the reason: a skipped integration test
  would look like a passing one.
* ``topics`` (function): a fresh :class:`broker.topics.Topics` namespace per
  test, so topic and group names never collide between tests or runs. Topics
  created under these namespaces are deleted when the session ends.
* ``admin`` (function): an :class:`broker.kafka.admin.Admin` on the cluster.
* ``own_broker`` (function): a started broker of the test's own, for fault tests
  that stop or kill it (test_kafka_harness.py has its own, not started).

Fixtures are lazy: tests that use none of them never start Kafka.
Add further fixtures below their own heading.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from broker import config
from broker.kafka.admin import Admin
from broker.kafka.cluster import Cluster, obtain_cluster
from broker.kafka.exceptions import ClusterUnavailableError, KafkaError
from broker.kafka.local import THROWAWAY_JVM_OPTS, LocalKafka
from broker.topics import Topics
from tests.secured import Secured, start_secured

log = logging.getLogger(__name__)


# -- markers ------------------------------------------------------------------------
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``kafka`` every test that uses the cluster (directly or through another
    fixture), so ``make check`` (``-m "not kafka and not jvm"``) leaves out every test that
    needs a broker. Tests that start a broker of their own carry the mark themselves;
    ``jvm`` (a Maven fetch and a JVM, no broker) is set by its module.
    """
    for item in items:
        if "kafka_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


# -- settings -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def settings() -> config.Settings:
    """Settings from the environment, exactly as the services read them."""
    return config.load()


# -- Kafka --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _test_namespaces() -> set[str]:
    """Namespaces handed out by ``topics`` in this session (for cleanup)."""
    return set()


@pytest.fixture(scope="session")
def kafka_cluster(
    settings: config.Settings, _test_namespaces: set[str]
) -> Iterator[Cluster]:
    try:
        cluster = obtain_cluster(settings)
    except ClusterUnavailableError as exc:
        pytest.fail(f"no Kafka cluster for integration tests: {exc}", pytrace=False)
    log.info("Kafka for this session: %s at %s", cluster.description, cluster.bootstrap)
    try:
        yield cluster
    finally:
        try:
            _delete_test_topics(cluster.bootstrap, _test_namespaces)
        finally:
            cluster.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: Cluster) -> str:
    """``host:port`` of a real, ready Kafka cluster."""
    return kafka_cluster.bootstrap


@pytest.fixture(scope="session")
def secured(
    tmp_path_factory: pytest.TempPathFactory, settings: config.Settings
) -> Iterator[Secured]:
    """The secured local broker (tests/secured.py), started on first use, once."""
    yield from start_secured(tmp_path_factory.mktemp("secure-kafka"), settings)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A throwaway single-node broker, started (own data dir and ports), for tests that
    stop, kill or restart the broker: the session's broker is not touched. Wiped after."""
    broker = LocalKafka(
        config.load().home, instance_dir=tmp_path / "kafka", jvm_opts=THROWAWAY_JVM_OPTS
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.wipe()


@pytest.fixture
def topics(_test_namespaces: set[str]) -> Topics:
    """Topic and group names under a namespace unique to this test."""
    t = Topics(namespace=f"t{uuid4().hex[:10]}")
    _test_namespaces.add(t.namespace)
    return t


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[Admin]:
    with Admin(kafka_bootstrap) as a:
        yield a


def _delete_test_topics(bootstrap: str, namespaces: set[str]) -> None:
    """Delete the topics this session's tests created (a reused broker stays small).

    Only topics under namespaces this session handed out are touched, so a
    shared external cluster's other topics are never at risk.
    """
    if not namespaces:
        return
    pattern = re.compile(r"^(" + "|".join(re.escape(n) for n in sorted(namespaces)) + r")\.")
    try:
        with Admin(bootstrap) as a:
            doomed = sorted(t for t in a.list_topics() if pattern.match(t))
            for i in range(0, len(doomed), 200):
                a.delete_topics(doomed[i : i + 200])
    except KafkaError as exc:  # cleanup must not turn a green run red
        log.warning("could not delete test topics: %s", exc)
