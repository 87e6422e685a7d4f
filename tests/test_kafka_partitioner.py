"""Keyed records land where Kafka's default partitioner puts them (one child, one partition)."""

from __future__ import annotations

import os

from kafka.partitioner.default import DefaultPartitioner

from broker.kafka.murmur2 import murmur2, murmur2_plain, murmur2_python
from broker.kafka.producer import KeyHashCachingPartitioner


class _Cluster:
    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))


def test_same_partition_as_the_default_for_every_key_and_partition_count() -> None:
    default, cached = DefaultPartitioner(), KeyHashCachingPartitioner(max_keys=50)
    keys = [os.urandom(i % 40 + 1) for i in range(300)] + [b"pseudonym-123"] * 5
    for n in (1, 2, 3, 6, 12):
        cluster = _Cluster(n)
        for key in keys + keys:  # the second round comes from the cache (or after a clear)
            want = default.partition("t", key, key, b"v", b"v", cluster)
            assert cached.partition("t", key, key, b"v", b"v", cluster) == want, (key, n)


def test_java_murmur2_placements() -> None:
    # Placements of Kafka's Java DefaultPartitioner (Utils.murmur2, toPositive, % n)
    # for the keys of kafka-python's own murmur2 test vectors.
    # (Java's UtilsTest: murmur2("21") = -973932308, murmur2("foobar") = -790332482.)
    cluster = _Cluster(1000)
    cached = KeyHashCachingPartitioner()
    assert (
        cached.partition("t", None, b"21", None, b"v", cluster) == (-973932308 & 0x7FFFFFFF) % 1000
    )
    assert (
        cached.partition("t", None, b"foobar", None, b"v", cluster)
        == (-790332482 & 0x7FFFFFFF) % 1000
    )


def test_the_key_cache_is_bounded() -> None:
    cached = KeyHashCachingPartitioner(max_keys=10)
    cluster = _Cluster(3)
    for i in range(100):
        cached.partition("t", None, str(i).encode(), None, b"v", cluster)
    assert len(cached._hashes) <= 10


def test_the_fast_murmur2_is_kafka_pythons_on_every_length() -> None:
    # Every tail length (0-3 bytes past the last word), short and long keys, and
    # bytes with the high bit set (no sign slips in a word or in the tail).
    keys = [os.urandom(n) for n in range(0, 130) for _ in range(8)]
    keys += [b"\xff" * n for n in range(12)] + [b"\x80\x00\x00\x00" * 9]
    for key in keys:
        assert murmur2(key) == murmur2_python(key) == murmur2_plain(key), key
    # Java's UtilsTest vectors, as unsigned ints.
    for fast in (murmur2, murmur2_python):
        assert fast(b"21") == -973932308 & 0xFFFFFFFF
        assert fast(b"foobar") == -790332482 & 0xFFFFFFFF


def test_the_partitioner_hashes_with_the_native_murmur2() -> None:
    # A dependency (pyproject.toml), so present wherever the project is installed:
    # the Python version is only the fallback.
    assert murmur2 is not murmur2_python
    assert murmur2.__name__ == "murmur2_native"
