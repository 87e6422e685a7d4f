"""One router of a group crash-looping under a steady stream, watched from outside.

:func:`crash_loop` starts ``routers`` ``safeshare serve`` processes in one group
(``--instance r0``, ``r1``, ...), publishes a steady :class:`Load`, and SIGKILLs
``r0`` (the victim) soon after each of its incarnations first commits,
restarting it at once, ``kills`` times. Meanwhile :class:`Watch` samples, every
:data:`SAMPLE_S`, the group's committed offsets and the end offsets of every
ingest partition, and the group's assignment. Afterwards the load stops,
everything is routed and every router is stopped
with SIGTERM, so the exactly-once invariants can be checked.

A *standstill* of a partition is a stretch during which it had records to
route and its committed offset did not move; it counts for the router that
owned the partition when it stood still (the last assignment seen). The
figure of interest: the longest standstill of the partitions the OTHER
routers owned. Used by tests/test_router_crashloop.py and
``python -m bench crashloop``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker import config
from broker.config import PROJECT_ROOT
from broker.kafka.admin import Admin
from broker.kafka.consumer import make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.structs import TopicPartition
from broker.policy import Policy
from tests.helpers import example, wait_for
from tests.router_load import KINDS, Load

#: How often the watcher samples offsets and the assignment.
SAMPLE_S = 0.1


@dataclass
class Standstill:
    tp: TopicPartition
    start: float
    end: float
    owner: str | None  # client id of the router that owned it, None if never seen owned

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Watch(threading.Thread):
    """Samples committed offsets, end offsets and owners of ``tps`` (never joins the group)."""

    def __init__(self, bootstrap: str, group: str, tps: list[TopicPartition]) -> None:
        super().__init__(daemon=True)
        self.group, self.tps = group, tps
        self._admin = Admin(bootstrap)
        self._ends = make_consumer(bootstrap, group_id=None)
        self.samples: list[tuple[float, dict[TopicPartition, int], dict[TopicPartition, int]]] = []
        self.owners: list[tuple[float, dict[TopicPartition, str]]] = []
        self.states: list[tuple[float, str]] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                t = time.monotonic()
                try:
                    ends = self._ends.end_offsets(self.tps)
                    committed = self._admin.group_offsets(self.group)
                    desc = self._admin.describe_group(self.group)
                except Exception:  # noqa: BLE001 - a missed sample, counted
                    self.errors += 1
                else:
                    self.samples.append((t, committed, ends))
                    self.owners.append(
                        (t, {tp: m.client_id for m in desc.members for tp in m.partitions})
                    )
                    if not self.states or self.states[-1][1] != desc.state:
                        self.states.append((t, desc.state))
                self._halt.wait(max(0.0, t + SAMPLE_S - time.monotonic()))
        finally:
            self._admin.close()
            self._ends.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def owner_at(self, tp: TopicPartition, t: float) -> str | None:
        """Who owned ``tp`` at ``t``: the last assignment seen at or before ``t`` that has it."""
        for at, owners in reversed(self.owners):
            if at <= t and tp in owners:
                return owners[tp]
        return next((owners[tp] for _, owners in self.owners if tp in owners), None)

    def standstills(self, since: float, until: float) -> list[Standstill]:
        """Every standstill of every partition within [since, until]."""
        out: list[Standstill] = []
        for tp in self.tps:
            last: int | None = None
            still_since: float | None = None  # a backlog waiting since then
            for t, committed, ends in self.samples:
                if not since <= t <= until:
                    continue
                c, e = committed.get(tp, 0), ends.get(tp, 0)
                if last is not None and c != last and still_since is not None:
                    out.append(Standstill(tp, still_since, t, self.owner_at(tp, still_since)))
                    still_since = None
                if c != last:
                    still_since = None
                last = c
                if c < e and still_since is None:
                    still_since = t
            if still_since is not None:
                out.append(Standstill(tp, still_since, until, self.owner_at(tp, still_since)))
        return out


@dataclass
class CrashLoopResult:
    routers: int
    kills: int
    seconds: float
    others_longest_s: float
    victim_longest_s: float
    others_standstills_over_1s: int
    watch: Watch
    victim: str
    log: str = ""
    started: float = 0.0
    kills_at: list[float] = field(default_factory=list)

    def timeline(self) -> str:
        """Kills and group states, in seconds from the first kill's countdown."""
        marks = [(t, "kill") for t in self.kills_at] + [(t, s) for t, s in self.watch.states]
        return ", ".join(f"{t - self.started:+.1f} {what}" for t, what in sorted(marks))


def client_id(instance: str) -> str:
    return f"safeshare-router-{instance}"


class Routers:
    """``safeshare serve`` processes of one group, ``r0`` .. ``r{n-1}``, logging to one file."""

    def __init__(self, env: dict[str, str], log_path: Path, code_root: Path = PROJECT_ROOT) -> None:
        self.env, self.log_path, self.code_root = env, log_path, code_root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, instance: str) -> None:
        # SAFESHARE_CRASHLOOP_VERBOSE=-vv: the routers' (and kafka-python's) debug log.
        verbose = [v] if (v := os.environ.get("SAFESHARE_CRASHLOOP_VERBOSE")) else []
        cmd = [sys.executable, "-m", "broker.cli.main", *verbose, "serve", "--instance", instance,
               "--metrics-port", "0"]
        with open(self.log_path, "ab") as log_file:
            self.procs[instance] = subprocess.Popen(
                cmd, env=self.env, cwd=self.code_root, stdout=log_file, stderr=subprocess.STDOUT
            )

    def kill(self, instance: str) -> None:
        proc = self.procs[instance]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                codes[name] = None
        return codes

    def exited(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]


def ingest_partitions(s: config.Settings) -> list[TopicPartition]:
    """The ingest partitions the :class:`Load` writes to (its agencies, 2 partitions each)."""
    agencies = sorted({example(k)["source"]["agency_id"] for k in KINDS})
    return [TopicPartition(s.topics.ingest(a), p) for a in agencies for p in (0, 1)]


def crash_loop(
    bootstrap: str,
    s: config.Settings,
    policy: Policy,
    load: Load,
    *,
    routers: int = 3,
    kills: int = 6,
    up_s: tuple[float, float] = (0.0, 1.5),
    seed: int = 0,
    code_root: Path = PROJECT_ROOT,
) -> CrashLoopResult:
    """Run the crash loop described in the module docstring; ``load`` is started here.

    Each incarnation of the victim is killed ``up_s`` (uniformly drawn) after
    it first committed, and restarted at once. Returns once everything
    published has been routed and every router has stopped.
    """
    del policy  # the caller checks the invariants with it
    rng = random.Random(seed)
    env = dict(
        os.environ,
        SAFESHARE_BOOTSTRAP=bootstrap,
        SAFESHARE_NAMESPACE=s.topics.namespace,
        SAFESHARE_HOME=str(s.home),
    )
    log_path = s.home / "routers.log"
    tps = ingest_partitions(s)
    names = [f"r{i}" for i in range(routers)]
    victim = names[0]
    group = Routers(env, log_path, code_root)
    watch = Watch(bootstrap, s.topics.router_group, tps)
    admin = Admin(bootstrap)
    ends = make_consumer(bootstrap, group_id=None)

    def victim_committed(before: dict[TopicPartition, int]) -> bool:
        desc = admin.describe_group(s.topics.router_group)
        mine = {tp for m in desc.members if m.client_id == client_id(victim) for tp in m.partitions}
        now = admin.group_offsets(s.topics.router_group)
        return any(now.get(tp, 0) > before.get(tp, 0) for tp in mine & set(tps))

    def everyone_owns_something() -> bool:
        try:
            desc = admin.describe_group(s.topics.router_group)
        except KafkaError:  # no coordinator yet (a fresh broker)
            return False
        owning = {m.client_id for m in desc.members if m.partitions & set(tps)}
        return desc.state == "Stable" and owning == {client_id(n) for n in names}

    try:
        for name in names:
            group.start(name)
        load.start()
        wait_for("every router to own ingest partitions", everyone_owns_something,
                 timeout_s=120, poll_s=0.5)
        watch.start()
        time.sleep(3.0)  # a steady state to compare against, not a wait for a condition
        started = time.monotonic()
        kills_at: list[float] = []
        for _ in range(kills):
            before = admin.group_offsets(s.topics.router_group)
            # Killed once this incarnation works (it committed on a partition of
            # its own), at a random moment after: most kills land mid-transaction.
            wait_for(
                f"{victim} to commit",
                lambda: victim_committed(before) or bool(group.exited()),  # noqa: B023
                timeout_s=120, poll_s=0.2,
            )
            assert not group.exited(), (group.exited(), log_path.read_text()[-3000:])
            time.sleep(rng.uniform(*up_s))  # a random moment to kill at, not a wait
            kills_at.append(time.monotonic())
            group.kill(victim)
            group.start(victim)
        time.sleep(up_s[1])  # the last incarnation starts: what follows is measured too
        finished = time.monotonic()
        load.stop()
        wait_for(
            "the group to route everything",
            lambda: sum(admin.group_offsets(s.topics.router_group).get(tp, 0) for tp in tps)
            >= sum(ends.end_offsets(tps).values()),
            timeout_s=180, poll_s=0.5,
        )
        watch.stop()
        codes = group.stop_all()
        assert all(c == 0 for c in codes.values()), (codes, log_path.read_text()[-3000:])
    finally:
        if load.is_alive():
            load._halt.set()
        for proc in group.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        watch._halt.set()
        admin.close()
        ends.close()

    stills = watch.standstills(started, finished)
    # A partition never seen owned counts against the others (conservative).
    others = [x for x in stills if x.owner != client_id(victim)]
    mine = [x for x in stills if x.owner == client_id(victim)]
    return CrashLoopResult(
        routers=routers,
        kills=kills,
        seconds=finished - started,
        others_longest_s=max((x.seconds for x in others), default=0.0),
        victim_longest_s=max((x.seconds for x in mine), default=0.0),
        others_standstills_over_1s=sum(1 for x in others if x.seconds > 1.0),
        watch=watch,
        victim=client_id(victim),
        log=log_path.read_text(errors="replace"),
        started=started,
        kills_at=kills_at,
    )
