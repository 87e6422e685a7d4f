"""The project's own single-node Kafka: fetched with Maven, run from jars, no Docker.

Why it exists: the machines this project runs on (developers' and CI's) have
Java 17 and Maven but no Docker engine and no Kafka. Integration tests need a
real broker (docs/DESIGN.md: never mock Kafka), so the project starts one itself.

Layout under ``Settings.home`` (``var/`` in a checkout, gitignored; see :mod:`broker.config`)::

    kafka/<version>/libs/          jars from Maven Central (shared by all instances)
    kafka/<version>/libs/.complete marker: the fetch finished
    kafka/run/                     the default instance (``make kafka-up``)
        instance.json              cluster id, ports, version (kept across restarts)
        server.properties          generated on every start
        broker.json                state file while running: pid, bootstrap
        data/                      log.dirs (KRaft metadata + topic data)
        logs/server.log            log4j2 output (deploy/kafka/log4j2.properties)
        logs/stdout.log            the JVM's own stdout/stderr (crashes land here)
    kafka/secure/                  the secured instance (``LocalKafka(secure=True)``)
        security/tls/              local CA and broker certificate (PEM, 0600)
        security/users/            one SCRAM password file per principal (0600)

The package, one module per part:

* :mod:`.fetch`: the jars, fetched once with Maven (``deploy/kafka/pom.xml``);
* :mod:`.properties`: ``server.properties`` derived from ``instance.json``;
* :mod:`.process`: :class:`LocalKafka`, the lifecycle (format, launch, wait, stop);
* :mod:`.probe`: :func:`probe_broker`, is a broker ready (also for other clusters).

How it runs (facts checked against Kafka 4.1.1 jars):

* ``kafka.tools.StorageTool random-uuid`` makes a cluster id, ``format
  --standalone -t <id> -c server.properties`` writes ``meta.properties`` and the
  bootstrap checkpoint of a one-voter dynamic quorum. Formatting happens once
  per data dir; later starts reuse the data.
* ``kafka.Kafka server.properties`` runs broker and controller in one JVM.
  Readiness is asked of the broker (DescribeCluster shows the node unfenced),
  never assumed after a sleep.
* SIGTERM shuts it down cleanly in about 2 s; SIGKILL is the fallback.

Ports are chosen free on first start and then kept (``instance.json``) so a
restarted broker is found at the same bootstrap address; if another process
took one of them meanwhile, new ports are picked and the data is kept (a
single-voter quorum accepts a changed controller endpoint).

Secured (``secure=True``, its own instance dir ``kafka/secure`` by default):
clients connect with SASL/SCRAM-SHA-512 over TLS (``SASL_SSL``) to a broker
certificate signed by a CA the project generates (:mod:`broker.kafka.security`);
Kafka's ``StandardAuthorizer`` denies whatever no ACL allows
(``allow.everyone.if.no.acl.found=false``). The KRaft controller listener
speaks mutual TLS: only a holder of a certificate from the local CA (the
broker itself, principal ``User:CN=safeshare-local-broker``) gets in, and that
principal is a super user or the node could not start (docs/DESIGN.md). The super
users are that, ``User:broker`` (the broker's SCRAM user, for its own
inter-broker traffic) and ``User:admin``. ``admin`` and ``broker`` get their
SCRAM credentials when storage is formatted (``--add-scram``, passed in a
0600 argument file so no password shows in ``ps``); other principals are
added over the admin API (:meth:`LocalKafka.add_users`).

Several processes may share one instance (``make kafka-up`` in one shell, pytest
in another): starts and stops are serialised with a file lock, and a broker
already running per ``broker.json`` (pid alive, command line ours, broker
answering) is reused instead of started twice.
"""

from broker.kafka.local.probe import probe_broker
from broker.kafka.local.process import (
    DEFAULT_JVM_OPTS,
    THROWAWAY_JVM_OPTS,
    BrokerState,
    LocalKafka,
    running_bootstrap,
)

__all__ = [
    "DEFAULT_JVM_OPTS",
    "THROWAWAY_JVM_OPTS",
    "BrokerState",
    "LocalKafka",
    "probe_broker",
    "running_bootstrap",
]
