"""One router crash-looping does not stop the others (issue 18 part 6(d)), on a real broker.

Two ``safeshare serve`` routers share the group under a steady stream; ``r0``
is SIGKILLed soon after each of its incarnations first commits and restarted
at once (harness: tests/crashloop.py). With dynamic membership every restart
was a new member: the group rebalanced, and the rebalance waited for the dead
incarnation's session to expire, so every partition, the other router's too,
stood still for about the session timeout after each crash (17.6 s longest,
measured with ``python -m bench crashloop``). Static membership (the instance
id is the ``group.instance.id``) lets a restarted instance take its own
partitions back without a rebalance; the others' committed offsets keep
moving. Exactly once still holds, and the victim's own partitions resume.

On a broker of its own: the session's shared broker carries every other
test's topics and load, and its metadata churn makes groups rebalance for
reasons of their own, which is not what is measured here.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from broker.kafka.local import LocalKafka
from tests.crashloop import crash_loop
from tests.helpers import own_namespace
from tests.router_load import Load, check_exactly_once

pytestmark = pytest.mark.kafka

KILLS = 4
#: The other router's partitions never stand still (records waiting, committed
#: offset not moving) this long. Before, each crash stopped them from the
#: restarted victim's join until its previous incarnation's session expired.
OTHERS_BOUND_S = 5.0


def test_a_crash_looping_router_does_not_stop_the_others(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    kafka_bootstrap = own_broker.bootstrap
    topics, s, policy = own_namespace(kafka_bootstrap, tmp_path / "home", prefix="c")
    s.home.mkdir()
    seed = int(os.environ.get("SAFESHARE_FAULT_SEED") or time.time())
    print(f"seed {seed} (SAFESHARE_FAULT_SEED to repeat)")
    load = Load(kafka_bootstrap, topics, rate=30, seed=random.Random(seed).randrange(1 << 30))

    res = crash_loop(kafka_bootstrap, s, policy, load, routers=2, kills=KILLS, seed=seed)

    print(
        f"{res.kills} kills in {res.seconds:.0f} s: the other router's partitions stood still "
        f"at most {res.others_longest_s:.1f} s, "
        f"the crash-looping one's {res.victim_longest_s:.1f} s"
        f"\ntimeline: {res.timeline()}"
    )
    assert res.others_longest_s < OTHERS_BOUND_S, (
        f"the other router's partitions stood still {res.others_longest_s:.1f} s "
        f"(bound {OTHERS_BOUND_S:.0f} s); timeline: {res.timeline()}"
    )
    check_exactly_once(kafka_bootstrap, s, policy, load)
