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

How it runs (facts checked against Kafka 4.1.1 jars):

* ``mvn dependency:copy-dependencies`` on ``deploy/kafka/pom.xml`` fetches
  ``kafka_2.13`` and its runtime closure (46 jars, 43 MB) plus the
  slf4j->log4j2 binding that ``kafka_2.13``'s pom does not bring.
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

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from broker import resources
from broker.config import KAFKA_VERSION, Settings
from broker.kafka.exceptions import LocalKafkaError
from broker.kafka.security import (
    ADMIN_USER,
    BROKER_CN,
    BROKER_USER,
    PLAINTEXT,
    SCRAM_MECHANISM,
    Credentials,
    LocalTls,
    PasswordStore,
    ensure_local_tls,
    resolve,
    scram_add_argument,
)

log = logging.getLogger(__name__)

def harness_file(name: str) -> Path:
    """A file of ``deploy/kafka`` (the Maven pom, the log4j2 configuration), shipped
    as package data so an installed package can run the broker too."""
    return resources.path("deploy", "kafka", name)

DEFAULT_INSTANCE = "run"
DEFAULT_SECURE_INSTANCE = "secure"
HOST = "127.0.0.1"

# Small heap: a test broker holds little data. G1 as Kafka's own scripts use;
# C1-only JIT (TieredStopAtLevel=1) trims JVM warm-up, which dominates a
# test broker's start, at a throughput cost that tests do not notice.
DEFAULT_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class BrokerState:
    """What ``broker.json`` records about a running local broker."""

    pid: int
    bootstrap: str
    port: int
    controller_port: int
    version: str
    cluster_id: str
    instance_dir: str
    started_at: float
    secure: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerState:
        data: dict[str, Any] = json.loads(text)
        return cls(
            pid=int(data["pid"]),
            bootstrap=str(data["bootstrap"]),
            port=int(data["port"]),
            controller_port=int(data["controller_port"]),
            version=str(data["version"]),
            cluster_id=str(data["cluster_id"]),
            instance_dir=str(data["instance_dir"]),
            started_at=float(data["started_at"]),
            secure=bool(data.get("secure", False)),
        )


@dataclass(frozen=True)
class _Instance:
    """What must stay the same across restarts of one data dir (``instance.json``)."""

    cluster_id: str
    port: int
    controller_port: int
    version: str
    secure: bool = False


class LocalKafka:
    """A single-node KRaft Kafka (broker+controller in one JVM) run from Maven jars.

    ``start()`` is idempotent: it reuses a broker this instance dir already runs
    (started by this or another process) and otherwise fetches jars (once),
    formats storage (once), starts the JVM and waits until the broker answers.
    ``stop()`` stops whatever broker the state file names, from any process.
    """

    def __init__(
        self,
        home: Path,
        version: str = KAFKA_VERSION,
        *,
        instance_dir: Path | None = None,
        jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS,
        log_level: str = "WARN",
        ready_timeout_s: float = 120.0,
        fetch_timeout_s: float = 1200.0,
        extra_properties: Mapping[str, str] | None = None,
        secure: bool = False,
    ) -> None:
        """``home``: cache root for jars (``<home>/kafka/<version>/libs``).

        ``instance_dir``: where this broker keeps data, logs and its state file;
        default ``<home>/kafka/run`` (``<home>/kafka/secure`` if ``secure``).
        Give a temp dir for a throwaway broker that must not disturb the
        shared one (it still uses the cached jars).

        ``secure``: SASL_SSL with SCRAM-SHA-512 and ACLs enforced (module
        docstring); clients need :meth:`credentials`. An instance dir is
        formatted either secure or not: switching wipes its data.
        """
        self.home = Path(home)
        self.version = version
        self.kafka_root = self.home / "kafka"
        self.libs_dir = self.kafka_root / version / "libs"
        self.secure = secure
        self.instance_dir = (
            Path(instance_dir) if instance_dir
            else self.kafka_root / (DEFAULT_SECURE_INSTANCE if secure else DEFAULT_INSTANCE)
        )
        self.data_dir = self.instance_dir / "data"
        self.logs_dir = self.instance_dir / "logs"
        self.properties_path = self.instance_dir / "server.properties"
        self.state_path = self.instance_dir / "broker.json"
        self.meta_path = self.instance_dir / "instance.json"
        self.tls = LocalTls(self.instance_dir / "security" / "tls")
        self.passwords = PasswordStore(self.instance_dir / "security" / "users")
        self.jvm_opts = jvm_opts
        self.log_level = log_level
        self.ready_timeout_s = ready_timeout_s
        self.fetch_timeout_s = fetch_timeout_s
        self.extra_properties = dict(extra_properties or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._state: BrokerState | None = None
        self.started_here = False
        """True if this object started the JVM (rather than reusing a running one)."""

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LocalKafka:
        return cls(settings.home, settings.kafka_version, **kwargs)

    # -- context manager ------------------------------------------------------
    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.started_here:
            self.stop()

    # -- public API -------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``host:port`` of the running broker; raises if it is not running."""
        state = self._state or self.status()
        if state is None:
            raise LocalKafkaError(f"local Kafka in {self.instance_dir} is not running")
        return state.bootstrap

    def credentials(self, user: str = ADMIN_USER) -> Credentials:
        """How a client logs in to this broker as ``user`` (PLAINTEXT if not secure).

        ``admin`` (the default) is a super user. Other users must have been
        added with :meth:`add_users`.
        """
        if not self.secure:
            return PLAINTEXT
        password = self.passwords.get(user)
        if password is None:
            raise LocalKafkaError(
                f"no password for SCRAM user {user!r} in {self.passwords.directory} "
                "(add it with LocalKafka.add_users or `safeshare acl users`)"
            )
        return Credentials(
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            username=user,
            password=password,
            ssl_cafile=self.tls.ca_cert,
        )

    def add_users(self, users: Iterable[str]) -> dict[str, Credentials]:
        """Give each user a SCRAM credential on the running secure broker (idempotent).

        A user without a password file gets a new random password; one that
        has a file gets its credential (re)set to it, so files and broker agree.
        """
        if not self.secure:
            raise LocalKafkaError("users exist only on a secure local broker (secure=True)")
        from broker.kafka.admin import Admin  # noqa: PLC0415 - admin imports heavy kafka

        users = sorted(set(users))
        if not users:
            return {}
        for reserved in (ADMIN_USER, BROKER_USER):
            if reserved in users:
                raise LocalKafkaError(f"{reserved!r} is the broker's own user; not re-keyed here")
        passwords = {u: self.passwords.ensure(u) for u in users}
        with Admin(self.bootstrap, credentials=self.credentials()) as admin:
            admin.upsert_scram_users(passwords)
        return {u: self.credentials(u) for u in users}

    def is_fetched(self) -> bool:
        return (self.libs_dir / ".complete").is_file()

    def fetch(self) -> Path:
        """Fetch the Kafka jars with Maven unless cached; return the libs dir.

        Idempotent and safe to run from several processes at once (file lock).
        The jars land in a temporary directory first and are renamed into
        place only when Maven succeeded, so a killed fetch never leaves a
        half-filled libs dir that looks complete.
        """
        if self.is_fetched():
            return self.libs_dir
        self.kafka_root.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.kafka_root / ".fetch.lock"):
            if self.is_fetched():
                return self.libs_dir
            mvn = shutil.which("mvn")
            if mvn is None:
                raise LocalKafkaError("cannot fetch Kafka jars: `mvn` (Maven) is not on PATH")
            tmp = self.libs_dir.parent / f"libs.partial-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [
                mvn, "-B", "-q", "-Dstyle.color=never",
                "-f", str(harness_file("pom.xml")),
                f"-Dkafka.version={self.version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                # Must be absolute: Maven resolves a relative one against the pom's dir.
                f"-DoutputDirectory={tmp.resolve()}",
            ]
            log.info("fetching Kafka %s jars with Maven into %s", self.version, self.libs_dir)
            t0 = time.monotonic()
            try:
                res = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, capture_output=True,
                    timeout=self.fetch_timeout_s, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise LocalKafkaError(
                    f"Maven did not fetch Kafka {self.version} within {self.fetch_timeout_s:.0f} s"
                ) from exc
            if res.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                out = (res.stdout + res.stderr).decode(errors="replace").strip().splitlines()
                raise LocalKafkaError(
                    f"Maven could not fetch Kafka {self.version} (exit {res.returncode}): "
                    + "\n".join(out[-30:])
                )
            main_jar = tmp / f"kafka_2.13-{self.version}.jar"
            if not main_jar.is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                raise LocalKafkaError(f"Maven succeeded but {main_jar.name} is missing")
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            os.replace(tmp, self.libs_dir)
            (self.libs_dir / ".complete").write_text(f"{self.version}\n")
            log.info("fetched Kafka %s in %.1f s", self.version, time.monotonic() - t0)
        return self.libs_dir

    def status(self) -> BrokerState | None:
        """The state of the broker this instance dir runs, or None if none runs.

        Checks that the recorded pid is alive and is really our JVM (the pid
        may have been reused after a reboot); does not ask the broker.
        """
        try:
            state = BrokerState.from_json(self.state_path.read_text())
        except (OSError, ValueError, KeyError):
            return None
        if not self._is_our_process(state.pid):
            return None
        return state

    def answers(self, timeout_s: float = 5.0) -> bool:
        """True if the broker this instance dir runs answers a DescribeCluster."""
        state = self.status()
        return state is not None and probe_broker(
            state.bootstrap, timeout_s, credentials=self.credentials()
        ) is None

    def start(self) -> BrokerState:
        """Start the broker (or reuse the running one) and wait until it answers."""
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.instance_dir / ".lock"):
            running = self.status()
            if running is not None:
                reason = probe_broker(running.bootstrap, 10.0, credentials=self.credentials())
                if reason is None:
                    log.info("reusing local Kafka at %s (pid %d)", running.bootstrap, running.pid)
                    self._state = running
                    return running
                log.warning(
                    "local Kafka pid %d does not answer (%s); restarting it", running.pid, reason
                )
                self._stop_locked(running.pid, 30.0)
            self.fetch()
            java = _find_java()
            inst = self._prepare_instance(java)
            self._write_properties(inst)
            return self._launch(java, inst)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the running broker, if any; True if one was stopped.

        SIGTERM first (Kafka flushes and closes its logs), SIGKILL if it has not
        exited after ``timeout_s``. Works from any process via the state file.
        """
        if not self.instance_dir.exists():
            return False
        with _file_lock(self.instance_dir / ".lock"):
            state = self.status()
            pid = state.pid if state else (self._proc.pid if self._proc else None)
            if pid is None or not _pid_alive(pid):
                self._clear_state()
                return False
            self._stop_locked(pid, timeout_s)
            return True

    def wipe(self) -> None:
        """Stop the broker and delete its instance dir (data, logs, ports)."""
        self.stop()
        shutil.rmtree(self.instance_dir, ignore_errors=True)

    def server_log_tail(self, lines: int = 40) -> str:
        """The last lines of server.log and stdout.log, for error messages."""
        out: list[str] = []
        for name in ("stdout.log", "server.log"):
            path = self.logs_dir / name
            try:
                text = path.read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            if text:
                out.append(f"--- {path} ---")
                out.extend(text[-lines:])
        return "\n".join(out)

    # -- internals --------------------------------------------------------------
    def _prepare_instance(self, java: str) -> _Instance:
        """Load or create instance.json, choose ports, format storage if needed."""
        inst: _Instance | None = None
        try:
            inst = _Instance(**json.loads(self.meta_path.read_text()))
        except (OSError, ValueError, TypeError):
            inst = None
        formatted = (self.data_dir / "meta.properties").is_file()
        if inst is not None and formatted and inst.version != self.version:
            log.warning(
                "local Kafka data in %s was formatted by Kafka %s, not %s: wiping it",
                self.data_dir, inst.version, self.version,
            )
            formatted = False
        if inst is not None and formatted and inst.secure != self.secure:
            log.warning(
                "local Kafka data in %s was formatted %s: wiping it",
                self.data_dir, "secure" if inst.secure else "without security",
            )
            formatted = False
        if self.secure:
            ensure_local_tls(self.tls.directory, hosts=(HOST, "localhost"))
            if formatted and any(
                self.passwords.get(u) is None for u in (ADMIN_USER, BROKER_USER)
            ):
                # Their SCRAM credentials were written at format time; without
                # the passwords nobody could log in (or the broker to itself).
                log.warning(
                    "admin/broker passwords of %s are gone: reformatting its storage",
                    self.instance_dir,
                )
                formatted = False
        if inst is None or not formatted:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            port, cport = _free_ports(2)
            inst = _Instance(self._random_uuid(java), port, cport, self.version, self.secure)
            self._write_properties(inst)
            self._format(java, inst)
        elif not (_port_free(inst.port) and _port_free(inst.controller_port)):
            port, cport = _free_ports(2)
            log.warning(
                "local Kafka ports %d/%d are taken; moving to %d/%d (data kept)",
                inst.port, inst.controller_port, port, cport,
            )
            inst = _Instance(inst.cluster_id, port, cport, inst.version, inst.secure)
        self.meta_path.write_text(json.dumps(asdict(inst), indent=2, sort_keys=True) + "\n")
        return inst

    def _properties(self, inst: _Instance) -> dict[str, str]:
        listener = f"PLAINTEXT://{HOST}:{inst.port}"
        controller = f"CONTROLLER://{HOST}:{inst.controller_port}"
        props = {
            # One JVM is broker and the only controller (voter) of a KRaft quorum.
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{inst.controller_port}",
            "listeners": f"{listener},{controller}",
            "advertised.listeners": f"{listener},{controller}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            # Internal topics default to RF 3: on one node they could never be
            # created and transactions/groups would hang.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Fewer internal partitions (default 50) make the first consumer
            # group / first transaction of a fresh broker start much faster.
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.num.partitions": "5",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            # Topics are created by broker.kafka.admin.Admin, with their configs;
            # a typo must fail, not silently create a default topic.
            "auto.create.topics.enable": "false",
            # Tests join groups constantly; don't wait 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            # The cleaner's dedupe buffer is allocated on the heap (default 128 MiB).
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        if self.secure:
            props.update(self._secure_properties(inst))
        props.update(self.extra_properties)
        return props

    def _secure_properties(self, inst: _Instance) -> dict[str, str]:
        """Listeners, TLS stores, SASL and the authorizer of a secure node (module doc)."""
        broker_pw = self.passwords.ensure(BROKER_USER)
        self.passwords.ensure(ADMIN_USER)
        listener = f"SASL_SSL://{HOST}:{inst.port}"
        controller = f"CONTROLLER://{HOST}:{inst.controller_port}"
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{broker_pw}";'
        )
        return {
            "listeners": f"{listener},{controller}",
            "advertised.listeners": f"{listener},{controller}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            # Clients: SCRAM over TLS. The broker logs in to itself as `broker`.
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
            # KIP-651 PEM stores: key + chain in one file; the CA as trust store.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.broker_keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca_cert.resolve()),
            "ssl.endpoint.identification.algorithm": "https",
            # SCRAM credentials live in the metadata log, which the controller
            # listener must work without: it uses mutual TLS instead.
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": ";".join(
                (f"User:CN={BROKER_CN}", f"User:{BROKER_USER}", f"User:{ADMIN_USER}")
            ),
        }

    def _write_properties(self, inst: _Instance) -> None:
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Generated by broker/kafka/local.py on every start; edits are overwritten.",
            f"# Kafka {self.version}, cluster {inst.cluster_id}",
        ]
        lines += [f"{k}={v}" for k, v in self._properties(inst).items()]
        text = "\n".join(lines) + "\n"
        if self.secure:
            # Holds the broker's own SCRAM password (its JAAS login).
            _write_private(self.properties_path, text)
        else:
            self.properties_path.write_text(text)

    def _java_cmd(
        self, java: str, main: str, *args: str, jvm_opts: tuple[str, ...] = ()
    ) -> list[str]:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return [
            java,
            *jvm_opts,
            f"-Dlog4j2.configurationFile={harness_file('log4j2.properties')}",
            f"-Dkafka.logs.dir={self.logs_dir.resolve()}",
            f"-Dsafeshare.kafka.loglevel={self.log_level}",
            "-cp", str(self.libs_dir.resolve() / "*"),
            main,
            *args,
        ]

    def _run_tool(
        self,
        java: str,
        *args: str,
        main: str | None = "kafka.tools.StorageTool",
        what: str | None = None,
        hide: tuple[str, ...] = (),
    ) -> str:
        """Run the StorageTool (``main=None``: ``args`` are an @argfile naming it).

        ``hide``: strings (passwords) never to repeat in an error message.
        """
        what = what or (args[0] if args else "")
        if main is not None:
            args = (main, *args)
        cmd = self._java_cmd(java, *args, jvm_opts=("-Xmx256m",))
        res = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False
        )
        out = res.stdout.decode(errors="replace")
        if res.returncode != 0:
            text = (out + res.stderr.decode(errors="replace")).strip()
            for secret in hide:
                text = text.replace(secret, "***")
            raise LocalKafkaError(
                f"StorageTool {what} failed (exit {res.returncode}): {text[-3000:]}"
            )
        return out

    def _random_uuid(self, java: str) -> str:
        cluster_id = self._run_tool(java, "random-uuid").strip().splitlines()[-1].strip()
        if not cluster_id:
            raise LocalKafkaError("StorageTool random-uuid printed no cluster id")
        return cluster_id

    def _format(self, java: str, inst: _Instance) -> None:
        # --standalone: this node is the one voter of a dynamic quorum
        # (controller.quorum.bootstrap.servers); without it a combined node
        # with no static controller.quorum.voters cannot elect a leader.
        args = ["format", "--standalone", "-t", inst.cluster_id, "-c", str(self.properties_path)]
        if not self.secure:
            self._run_tool(java, *args)
        else:
            passwords = tuple(self.passwords.ensure(u) for u in (ADMIN_USER, BROKER_USER))
            for user, pw in zip((ADMIN_USER, BROKER_USER), passwords, strict=True):
                args += ["--add-scram", scram_add_argument(user, pw)]
            # The passwords go through a 0600 java @argfile (main class and
            # arguments inside), so they never show on a command line.
            argfile = self.instance_dir / "security" / ".format.args"
            _write_private(
                argfile, "\n".join(_argfile_quote(a) for a in ("kafka.tools.StorageTool", *args))
            )
            try:
                self._run_tool(
                    java, f"@{argfile.resolve()}", main=None, what="format", hide=passwords
                )
            finally:
                argfile.unlink(missing_ok=True)
        log.info("formatted local Kafka storage in %s (cluster %s)", self.data_dir, inst.cluster_id)

    def _launch(self, java: str, inst: _Instance) -> BrokerState:
        cmd = self._java_cmd(
            java, "kafka.Kafka", str(self.properties_path.resolve()), jvm_opts=self.jvm_opts
        )
        stdout = open(self.logs_dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        t0 = time.monotonic()
        try:
            # Own session: Ctrl-C in the shell that ran `make kafka-up` must not
            # reach the broker, and the broker outlives the process that started it.
            self._proc = subprocess.Popen(
                cmd, cwd=self.instance_dir, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            stdout.close()
        state = BrokerState(
            pid=self._proc.pid,
            bootstrap=f"{HOST}:{inst.port}",
            port=inst.port,
            controller_port=inst.controller_port,
            version=self.version,
            cluster_id=inst.cluster_id,
            instance_dir=str(self.instance_dir.resolve()),
            started_at=time.time(),
            secure=self.secure,
        )
        try:
            self._wait_ready(state)
        except BaseException:
            self._stop_locked(state.pid, 10.0)
            raise
        _atomic_write(self.state_path, state.to_json())
        self._state = state
        self.started_here = True
        log.info(
            "local Kafka %s ready at %s in %.1f s (pid %d)",
            self.version, state.bootstrap, time.monotonic() - t0, state.pid,
        )
        return state

    def _wait_ready(self, state: BrokerState) -> None:
        """Ask the broker until it answers, the JVM dies, or the deadline passes."""
        deadline = time.monotonic() + self.ready_timeout_s
        reason = "not asked yet"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalKafkaError(
                    f"local Kafka exited with code {self._proc.returncode} while starting\n"
                    + self.server_log_tail()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalKafkaError(
                    f"local Kafka at {state.bootstrap} did not become ready within "
                    f"{self.ready_timeout_s:.0f} s (last answer: {reason})\n"
                    + self.server_log_tail()
                )
            probe = probe_broker(
                state.bootstrap, min(2.0, max(remaining, 0.5)), credentials=self.credentials()
            )
            if probe is None:
                return
            reason = probe
            time.sleep(0.1)  # poll interval between two questions, not a guess at readiness

    def _stop_locked(self, pid: int, timeout_s: float) -> None:
        t0 = time.monotonic()
        _signal(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            log.warning("local Kafka pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
            _signal(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10.0):
                raise LocalKafkaError(f"local Kafka pid {pid} survived SIGKILL")
        self._clear_state()
        self._state = None
        self.started_here = False
        log.info("stopped local Kafka pid %d in %.1f s", pid, time.monotonic() - t0)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout_s)  # also reaps our child
                return True
            except subprocess.TimeoutExpired:
                return False
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.05)
        return not _pid_alive(pid)

    def _clear_state(self) -> None:
        with suppress(FileNotFoundError):
            self.state_path.unlink()

    def _is_our_process(self, pid: int) -> bool:
        if not _pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # no /proc (not Linux): trust the live pid
        args = [a.decode(errors="replace") for a in cmdline]
        return "kafka.Kafka" in args and str(self.properties_path.resolve()) in args


def running_bootstrap(settings: Settings) -> str | None:
    """Bootstrap of the default local broker if one runs (per its state file), else None.

    For commands that must talk to an existing cluster and never start one
    implicitly (the CLI); does not ask the broker.
    """
    state = LocalKafka.from_settings(settings).status()
    return None if state is None else state.bootstrap


# -- helpers ----------------------------------------------------------------------
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
    from broker.kafka.configuration import AuthFailureRecorder

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


def _find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("cannot run Kafka: `java` (17 or newer) is not on PATH")
    return java


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie is dead, just unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Field 3, after the parenthesised command name (which may contain spaces).
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _port_free(port: int) -> bool:
    """True if we can bind ``port`` on HOST the way the JVM does (SO_REUSEADDR).

    With SO_REUSEADDR a port whose old connections linger in TIME_WAIT after
    a stop counts as free, exactly as it does for Kafka's own server socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS considers free right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600 from the first byte)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _argfile_quote(arg: str) -> str:
    """One argument of a java @argfile: double-quoted, backslashes and quotes escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
