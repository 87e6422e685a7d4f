"""The pattern detector killed at random moments (SIGKILL) while its feed
fills: no alert is lost and no alert version is published twice (real broker,
real process)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from broker.api import Publisher
from broker.clock import SystemClock
from broker.codec import Codec
from broker.kafka.admin import Admin
from broker.kafka.producer import make_producer
from broker.patterns.core import AGENCY
from broker.patterns.detectors import Detectors, Kind
from broker.patterns.observe import observations
from broker.routing.app import build_service
from broker.topics import Topics
from tests.helpers import read_to_end
from tests.patterns_helpers import missing, patterns_world
from tests.router_load import wait_for

pytestmark = pytest.mark.kafka

CODEC = Codec.default()
KILLS = 4


def _events(rng: random.Random, now: int) -> list[dict[str, Any]]:
    out = []
    for i in range(8):  # eight flats, three children each
        for c in range(3):
            out.append(missing(f"psn-flat{i}-{c}", f"Flat {i + 1}, {10 + i} Harbour Row",
                               rng.uniform(1, 20), now))
    for c in range(5):  # five children missing three times each
        for n in range(3):
            out.append(missing(f"psn-rep{c}", f"{n + 1} Noise Lane {c}", rng.uniform(1, 25), now))
    for c in range(150):  # noise: one episode each, somewhere of its own
        out.append(missing(f"psn-noise{c}", f"{c + 100} Quiet Street", rng.uniform(1, 25), now))
    rng.shuffle(out)
    return out


def test_a_detector_killed_at_random_moments_loses_no_alert_and_repeats_none(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s, policy = patterns_world(admin, topics, tmp_path)
    rng = random.Random(15)
    now = time.time_ns() // 1_000_000
    events = _events(rng, now)
    # One routed copy gives the decision every feed record of this test carries.
    with Publisher(bootstrap=kafka_bootstrap, agency="devon-cornwall-police",
                   topics=topics) as p:
        p.publish_json(missing("psn-seed", "somewhere", 1, now))
    build_service(s, kafka_bootstrap, clock=SystemClock(), instance_id="seed").run(idle_exit_s=2.0)
    [seed] = read_to_end(kafka_bootstrap, topics.feed(AGENCY))
    decision = CODEC.decode(seed.value or b"", "safeshare.FeedRecord")["decision"]
    records = [CODEC.encode({"decision": decision, "event": CODEC.from_json(e)},
                            "safeshare.FeedRecord") for e in events]

    def feed() -> None:
        producer = make_producer(kafka_bootstrap)
        for e, value in zip(events, records, strict=True):
            producer.send(topics.feed(AGENCY), value, key=e["subject"]["pseudonym"].encode())
            time.sleep(0.06)
        producer.flush()
        producer.close()

    env = {**os.environ, "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
           "SAFESHARE_NAMESPACE": topics.namespace, "SAFESHARE_POLICY": str(s.policy_path),
           "SAFESHARE_HOME": str(tmp_path / "home")}
    log_path = tmp_path / "patterns.log"

    def launch() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            log.write(b"--- launch\n")  # what follows is this incarnation's (the others died)
            log.flush()
            return subprocess.Popen(
                [sys.executable, "-m", "broker.cli.main", "-v", "patterns", "serve",
                 "--instance", "k0"], env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def alerts() -> list[dict[str, Any]]:
        return [CODEC.decode(r.value or b"", "safeshare.ConcernEvent")["payload"][1]
                for r in read_to_end(kafka_bootstrap, topics.ingest(AGENCY))]

    expected = Detectors(thresholds=policy.pattern_thresholds)
    for e in events:
        expected.observe(observations(CODEC.from_json(e)))
    # No return-home interviews: every return decided by the newest event is overdue.
    expected.overdue(max(o.at_ms for o in expected.observations()))
    want = {a.alert_id: set(a.event_ids) for a in expected.alerts.values()}
    kinds = Counter(a.kind for a in expected.alerts.values())
    assert (kinds[Kind.SHARED_PLACE], kinds[Kind.REPEAT_MISSING], kinds[Kind.OVERDUE_AREA]) \
        == (8, 5, 1) and kinds[Kind.OVERDUE_INTERVIEW] > 100, kinds

    writer = threading.Thread(target=feed)
    writer.start()
    proc = launch()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(2.5, 5.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = launch()
        writer.join()

        def complete() -> bool:
            last: dict[str, set[str]] = {}
            for a in sorted(alerts(), key=lambda a: a["version"]):
                last[a["alert_id"]] = set(a["evidence"])
            return last == want
        # Each incarnation resumes at once (a static member of the group); as a dynamic
        # one, the last waited ~90 s for the group to drop the killed ones.
        wait_for("every alert with all its evidence", complete, timeout_s=60, poll_s=1.0)
        # The alerts may all be out before the last incarnation started: it is to be
        # stopped cleanly once running (a SIGTERM during start-up kills it outright).
        wait_for("the last detector to take over its feed", lambda: "rebuilt from the changelog"
                 in log_path.read_text().rsplit("--- launch", 1)[-1], timeout_s=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    got = alerts()
    versions = Counter((a["alert_id"], a["version"]) for a in got)
    assert max(versions.values()) == 1, [k for k, v in versions.items() if v > 1]
    for aid in want:  # versions 1..n, none skipped
        mine = sorted(v for (i, v) in versions if i == aid)
        assert mine == list(range(1, len(mine) + 1)), (aid, mine)
