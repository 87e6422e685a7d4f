"""broker.kafka.writers.Writers: a kept writer is handed out again until its
producer breaks; then a new one takes its place and the broken one is closed
(the real-broker cases, a refused record and the next write landing, are in
tests/test_workspace_writers.py and tests/test_gateway_feeds.py)."""

from __future__ import annotations

import threading

from broker.kafka.writers import Writers


class FakeWriter:
    """A writer whose producer breaks when a test says so."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.broken = False
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def _pool() -> tuple[Writers[str, FakeWriter], list[FakeWriter]]:
    made: list[FakeWriter] = []

    def make(key: str) -> FakeWriter:
        made.append(FakeWriter(key))
        return made[-1]

    return Writers("test writer", make), made


def test_a_writer_is_kept_per_key_until_it_breaks() -> None:
    pool, made = _pool()
    a = pool.get("mash")
    assert pool.get("mash") is a
    b = pool.get("police")
    assert b is not a and b.key == "police"

    a.broken = True
    renewed = pool.get("mash")
    assert renewed is not a and renewed.key == "mash"
    assert a.closed == 1  # the stale one is closed once, when replaced
    assert pool.get("mash") is renewed
    assert b.closed == 0 and len(made) == 3

    pool.close()
    assert (renewed.closed, b.closed, a.closed) == (1, 1, 1)


def test_threads_asking_at_once_share_one_replacement() -> None:
    pool, made = _pool()
    first = pool.get("mash")
    first.broken = True
    got: list[FakeWriter] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        got.append(pool.get("mash"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 2 and all(g is made[1] for g in got)
    assert first.closed == 1
