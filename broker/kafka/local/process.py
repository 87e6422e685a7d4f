"""The local broker's process: prepare its instance dir, format, launch, wait, stop.

:class:`LocalKafka` is the lifecycle (package docstring: layout, how it runs,
sharing between processes); the jars come from :mod:`.fetch`, the properties
from :mod:`.properties`, readiness from :mod:`.probe`.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from broker.config import KAFKA_VERSION, Settings
from broker.kafka.exceptions import LocalKafkaError
from broker.kafka.local._os import (
    atomic_write,
    file_lock,
    find_java,
    free_ports,
    pid_alive,
    port_free,
    signal_pid,
    write_private,
)
from broker.kafka.local.fetch import fetch_jars, harness_file, is_fetched
from broker.kafka.local.probe import probe_broker
from broker.kafka.local.properties import HOST, Instance, render, server_properties
from broker.kafka.security import (
    ADMIN_USER,
    BROKER_USER,
    PLAINTEXT,
    SCRAM_MECHANISM,
    Credentials,
    LocalTls,
    PasswordStore,
    ensure_local_tls,
    scram_add_argument,
)

log = logging.getLogger(__name__)

DEFAULT_INSTANCE = "run"
DEFAULT_SECURE_INSTANCE = "secure"

# The shared local broker (make run, make test, make bench) lives for minutes to
# hours and runs as Kafka's own scripts start one: a 1 GiB heap
# (kafka-server-start.sh), G1 with a 20 ms pause target (kafka-run-class.sh) and
# the JVM's own tiered JIT. The router's latency was measured against it
# (docs/PERFORMANCE.md): with C1 only every request took longer, and with half
# the heap the broker paused for a young collection (about 16 ms on this
# 2-core machine) twice as often, each pause landing in the tail of p99.
_COMMON_JVM_OPTS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
DEFAULT_JVM_OPTS: tuple[str, ...] = ("-Xms1g", "-Xmx1g", *_COMMON_JVM_OPTS)
#: A broker that lives for seconds (a test that kills or restarts its own):
#: a small heap and C1 only, whose quicker warm-up is all such a broker sees.
THROWAWAY_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m", "-Xmx512m", *_COMMON_JVM_OPTS, "-XX:TieredStopAtLevel=1",
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
        return is_fetched(self.libs_dir)

    def fetch(self) -> Path:
        """Fetch the Kafka jars with Maven unless cached; return the libs dir
        (:func:`broker.kafka.local.fetch.fetch_jars`)."""
        return fetch_jars(self.libs_dir, self.version, self.fetch_timeout_s)

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
        with file_lock(self.instance_dir / ".lock"):
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
            java = find_java()
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
        with file_lock(self.instance_dir / ".lock"):
            state = self.status()
            pid = state.pid if state else (self._proc.pid if self._proc else None)
            if pid is None or not pid_alive(pid):
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
    def _prepare_instance(self, java: str) -> Instance:
        """Load or create instance.json, choose ports, format storage if needed."""
        inst: Instance | None = None
        try:
            inst = Instance(**json.loads(self.meta_path.read_text()))
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
            port, cport = free_ports(2)
            inst = Instance(self._random_uuid(java), port, cport, self.version, self.secure)
            self._write_properties(inst)
            self._format(java, inst)
        elif not (port_free(inst.port) and port_free(inst.controller_port)):
            port, cport = free_ports(2)
            log.warning(
                "local Kafka ports %d/%d are taken; moving to %d/%d (data kept)",
                inst.port, inst.controller_port, port, cport,
            )
            inst = Instance(inst.cluster_id, port, cport, inst.version, inst.secure)
        self.meta_path.write_text(json.dumps(asdict(inst), indent=2, sort_keys=True) + "\n")
        return inst

    def _write_properties(self, inst: Instance) -> None:
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        props = server_properties(
            inst, self.data_dir, tls=self.tls, passwords=self.passwords,
            extra=self.extra_properties,
        )
        text = render(inst, props)
        if self.secure:
            # Holds the broker's own SCRAM password (its JAAS login).
            write_private(self.properties_path, text)
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

    def _format(self, java: str, inst: Instance) -> None:
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
            write_private(
                argfile, "\n".join(_argfile_quote(a) for a in ("kafka.tools.StorageTool", *args))
            )
            try:
                self._run_tool(
                    java, f"@{argfile.resolve()}", main=None, what="format", hide=passwords
                )
            finally:
                argfile.unlink(missing_ok=True)
        log.info("formatted local Kafka storage in %s (cluster %s)", self.data_dir, inst.cluster_id)

    def _launch(self, java: str, inst: Instance) -> BrokerState:
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
        atomic_write(self.state_path, state.to_json())
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
        signal_pid(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            log.warning("local Kafka pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
            signal_pid(pid, signal.SIGKILL)
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
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

    def _clear_state(self) -> None:
        with suppress(FileNotFoundError):
            self.state_path.unlink()

    def _is_our_process(self, pid: int) -> bool:
        if not pid_alive(pid):
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



def _argfile_quote(arg: str) -> str:
    """One argument of a java @argfile: double-quoted, backslashes and quotes escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'

