"""Exactly once under faults, on real brokers: the router killed, the broker restarted.

While a producer thread publishes a steady stream (example events of every
kind, varied, and some garbage), the router is SIGKILLed at random moments
and restarted with the same instance id (so its new incarnation fences the
old one's open transaction), or the broker under it is stopped and started.
Afterwards, for every event published (and acknowledged):

- each subscriber the policy entitles (``decide_all``, as the router would
  decide it) finds it exactly once in its ``read_committed`` feed, and no
  other subscriber finds it at all;
- the audit log holds exactly one decision leaf per (event, subscriber), and
  the shares among them are exactly the entitled ones; no event was taken for
  a duplicate of itself;
- each garbage message is quarantined exactly once (one quarantine record,
  one leaf with its digest);
- a checkpoint of the whole log verifies offline (``verify_bundle``).

Bounded in time: about 10 s per kill (a dead member's session timeout before
the group moves its partitions) and a minute or two for the broker restarts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from broker.api import Publisher
from broker.audit.leaf import AuditLeaf, decode_batch
from broker.clock import SystemClock
from broker.config import PROJECT_ROOT
from broker.kafka.admin import Admin
from broker.kafka.local import LocalKafka
from broker.routing import service as service_module
from broker.routing.app import build_core, build_service
from broker.routing.service import RouterService
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    create_topics,
    example,
    own_namespace,
    read_to_end,
    settings_for,
    wait_for,
)
from tests.router_load import GroupProgress, Load, check_audit_verifies, check_exactly_once

pytestmark = pytest.mark.kafka

#: How long the broker stays down in the restart and crash test.
OUTAGE_S = 3.0

KILLS = 10


# -- SIGKILL ----------------------------------------------------------------------------------


def test_router_killed_at_random_moments_loses_and_duplicates_nothing(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    seed = int(os.environ.get("SAFESHARE_FAULT_SEED") or time.time())
    rng = random.Random(seed)
    print(f"seed {seed} (SAFESHARE_FAULT_SEED to repeat)")
    env = dict(
        os.environ,
        SAFESHARE_BOOTSTRAP=kafka_bootstrap,
        SAFESHARE_NAMESPACE=topics.namespace,
        SAFESHARE_HOME=str(tmp_path),
    )
    log_path = tmp_path / "router.log"
    cmd = [sys.executable, "-m", "broker.cli.main", "route", "--idle", "0", "--instance", "r1"]

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                cmd, env=env, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )

    progress = GroupProgress(kafka_bootstrap, topics, [a.id for a in policy.agencies])
    load = Load(kafka_bootstrap, topics, rate=100, seed=seed)
    load.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        for kill in range(KILLS):
            proc = start()
            before = progress.committed()
            # Killed only once this incarnation has committed: then it is working,
            # and most kills land with a transaction open.
            wait_for(
                f"router incarnation {kill + 1} to commit",
                lambda: progress.committed() > before or proc.poll() is not None,  # noqa: B023
                timeout_s=90,
            )
            assert proc.poll() is None, "router exited by itself:\n" + log_path.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 1.5))  # a random moment to kill at, not a wait
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        load.stop()
        proc = start()
        wait_for(
            "the router to route everything",
            lambda: progress.committed() >= progress.end(),
            timeout_s=120,
            poll_s=0.5,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if load.is_alive():
            load._halt.set()
        progress.close()

    outputs = [topics.feed(x.id) for x in policy.subscribers] + [topics.quarantine, topics.audit]
    aborted = sum(
        len(read_to_end(kafka_bootstrap, t, committed=False)) - len(read_to_end(kafka_bootstrap, t))
        for t in outputs
    )
    print(
        f"{len(load.events)} events, {len(load.garbage)} garbage, {KILLS} kills; "
        f"{aborted} records written by transactions that a kill cut short were aborted"
    )
    assert len(load.events) > 300 and load.garbage
    n_leaves = check_exactly_once(kafka_bootstrap, s, policy, load)
    check_audit_verifies(kafka_bootstrap, s, n_leaves)


# -- broker restart ---------------------------------------------------------------------------


def test_broker_restarted_mid_stream_loses_and_duplicates_nothing(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap
    topics, s, policy = own_namespace(bootstrap, tmp_path / "home")

    clock = SystemClock()
    service = build_service(
        s,
        bootstrap,
        clock=clock,
        instance_id="restart",
        core=build_core(s, clock=clock, codec=CODEC),
        retry_backoff_s=(0.2, 2.0),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    router = threading.Thread(target=run, daemon=True)
    router.start()
    load = Load(bootstrap, topics, rate=60, seed=1)
    load.start()
    try:
        # A clean restart (SIGTERM, as in a rolling restart), then a crash (SIGKILL
        # at once: the broker recovers its logs and transaction state on start).
        for how, grace_s in (("restart", 30.0), ("crash", 0.0)):
            transactions = service.stats.transactions
            wait_for(
                "the router to commit",
                lambda: service.stats.transactions > transactions + 5,  # noqa: B023
                timeout_s=60,
            )
            transactions = service.stats.transactions
            own_broker.stop(timeout_s=grace_s)
            down_at = time.monotonic()
            time.sleep(OUTAGE_S)  # the fault's length (not a wait): both keep trying
            own_broker.start()
            up_at = time.monotonic()
            wait_for(
                f"the router to commit after the {how}",
                lambda: service.stats.transactions > transactions + 2,  # noqa: B023
                timeout_s=120,
            )
            print(
                f"broker {how}: down {up_at - down_at:.1f} s; router committing again "
                f"{time.monotonic() - up_at:.1f} s after it answered; "
                f"{service.stats.aborted} transactions aborted so far"
            )
        transactions = service.stats.transactions
        wait_for(
            "more of the load routed after the recovery",
            lambda: service.stats.transactions > transactions + 5,
            timeout_s=60,
        )
        load.stop()
        progress = GroupProgress(bootstrap, topics, [a.id for a in policy.agencies])
        try:
            wait_for(
                "the router to route everything",
                lambda: progress.committed() >= progress.end(),
                timeout_s=120,
                poll_s=0.5,
            )
        finally:
            progress.close()
    finally:
        service.stop()
        router.join(60)
        if load.is_alive():
            load._halt.set()
    assert not router.is_alive() and errors == [], errors
    stats = service.stats
    print(
        f"{len(load.events)} events, {len(load.garbage)} garbage; router: "
        f"{stats.transactions} transactions, {stats.aborted} aborted, "
        f"{stats.producer_restarts} producer restarts"
    )
    assert not stats.fenced
    n_leaves = check_exactly_once(bootstrap, s, policy, load)
    check_audit_verifies(bootstrap, s, n_leaves)


# -- stopping and health during a broker outage -----------------------------------------------


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_stopped_during_a_broker_outage_the_router_abandons_its_transaction_and_stops(
    own_broker: LocalKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker dies while a transaction is being committed: /healthz says the
    router is not committing, since when and why; asked to stop, the router
    abandons the transaction at once (saying so once) instead of waiting for the
    broker; when the broker is back, the next router with the same instance id
    fences it and routes every event exactly once."""
    monkeypatch.setattr(service_module, "HEALTH_STALE_S", 2.0)
    caplog.set_level(logging.WARNING, logger="broker.routing")
    bootstrap = own_broker.bootstrap
    topics, s, policy = own_namespace(bootstrap, tmp_path / "home")
    events = [dict(example("missing_episode")) for _ in range(10)]
    with Publisher(bootstrap=bootstrap, agency="devon-cornwall-police", topics=topics) as p:
        for e in events:
            p.publish_json(e)

    clock = SystemClock()

    def router() -> RouterService:
        return build_service(
            s, bootstrap, clock=clock, instance_id="outage",
            core=build_core(s, clock=clock, codec=CODEC), metrics_port=0,
            retry_backoff_s=(0.2, 1.0), transaction_wait_s=3.0,
        )

    service = router()
    finish = service._finish

    def broker_dies_during_the_commit(txn: Any) -> None:
        own_broker.stop(timeout_s=0)
        finish(txn)

    service._finish = broker_dies_during_the_commit  # type: ignore[method-assign]
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    wait_for("the transaction to fail", lambda: service.stats.aborted >= 1, timeout_s=90)
    wait_for(
        "/healthz to turn", lambda: not service.health()[0] and service._failures > 0, 30
    )
    status, health = get_json(f"http://127.0.0.1:{service.metrics_port}/healthz")
    assert status == 503, health
    assert health["committing"] is False and health["reason"] == "broker unreachable", health
    assert health["consecutive_failures"] >= 1 and health["not_committing_since"], health

    asked = time.monotonic()
    service.stop()
    thread.join(60)
    took = time.monotonic() - asked
    print(f"stopped {took:.1f} s after being asked, during the outage")
    assert not thread.is_alive() and took < 15, took
    lines = [r.getMessage() for r in caplog.records]
    assert sum("abandoned" in m for m in lines) == 1, lines
    assert any("not committing: broker unreachable" in m for m in lines), lines

    own_broker.start()
    heir = router()
    heir_thread = threading.Thread(target=heir.run, daemon=True)
    heir_thread.start()
    try:
        wait_for("every event routed", lambda: heir.stats.consumed >= len(events), timeout_s=120)
    finally:
        heir.stop()
        heir_thread.join(60)
    leaves = [
        AuditLeaf.from_bytes(b)
        for r in read_to_end(bootstrap, topics.audit)
        for b in decode_batch(r.value or b"")
    ]
    decisions = Counter((lf.event_id, lf.recipient) for lf in leaves)
    assert set(decisions.values()) == {1}, decisions
    assert {e for e, _ in decisions} == {e["event_id"] for e in events}
    assert len(decisions) == len(events) * len(policy.subscribers)


def test_serve_started_while_the_broker_is_down_waits_reports_unready_and_connects(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    """``safeshare serve`` does not exit when the broker cannot be reached: /healthz
    answers 503 with the reason until it can, then 200; SIGTERM stops it with 0."""
    bootstrap = own_broker.bootstrap
    topics, s, _ = own_namespace(bootstrap, tmp_path / "home")
    own_broker.stop(timeout_s=0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, SAFESHARE_BOOTSTRAP=bootstrap, SAFESHARE_NAMESPACE=topics.namespace,
               SAFESHARE_HOME=str(s.home))
    log_path = tmp_path / "serve.log"
    healthz = f"http://127.0.0.1:{port}/healthz"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli.main", "serve", "--instance", "s1",
             "--metrics-port", str(port)],
            env=env, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        def health() -> tuple[int, dict[str, Any]]:
            try:
                return get_json(healthz)
            except OSError:
                return 0, {}

        wait_for("/healthz to say why", lambda: health()[1].get("reason") is not None, 60)
        status, body = health()
        assert status == 503 and body["state"] == "connecting", body
        assert body["reason"] == "broker unreachable" and body["not_committing_since"], body
        assert proc.poll() is None, log_path.read_text()

        own_broker.start()
        wait_for("/healthz 200 once connected", lambda: health()[0] == 200, 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = log_path.read_text()
    assert "Traceback" not in log, log
    assert log.count("cannot connect: broker unreachable") == 1, log
