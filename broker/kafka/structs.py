"""Typed values for Kafka coordinates and records, and their kafka-python counterparts.

kafka-python's namedtuples are untyped; these are what the rest of Safeshare
passes around. :class:`Closeable` gives every client ``with`` support.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import kafka.structs as _kstructs


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class OffsetAndMetadata(NamedTuple):
    """A committed position: ``offset`` is the next record to read."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True)
class Record:
    """One consumed record (kafka-python's ConsumerRecord, typed and trimmed)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = -1
    """Milliseconds since the epoch (CreateTime unless the topic says LogAppendTime)."""

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True)
class RecordMetadata:
    """Where a produced record landed."""

    topic: str
    partition: int
    offset: int


class GroupMetadata:
    """Opaque consumer-group snapshot for :meth:`Producer.send_offsets_to_transaction`."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def group_id(self) -> str | None:
        gid = getattr(self.raw, "group_id", None)
        return None if gid is None else str(gid)

    @property
    def generation(self) -> int:
        """The group generation the snapshot was taken in (-1 if not joined)."""
        return int(getattr(self.raw, "generation_id", -1))

    def __repr__(self) -> str:
        return f"GroupMetadata({self.raw!r})"


def _ktp(tp: TopicPartition | tuple[str, int]) -> Any:
    return _kstructs.TopicPartition(tp[0], tp[1])


def _kom(om: OffsetAndMetadata | int) -> Any:
    if isinstance(om, int):
        return _kstructs.OffsetAndMetadata(om, "", -1)
    return _kstructs.OffsetAndMetadata(om.offset, om.metadata, om.leader_epoch)


def _record(raw: Any) -> Record:
    headers = raw.headers  # made per consumed record: no generator when there are none
    if headers:
        headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in headers)
    timestamp = raw.timestamp
    return Record(
        raw.topic, raw.partition, raw.offset, raw.key, raw.value, headers or (),
        timestamp if timestamp is not None else -1,
    )  # fmt: skip


def offsets_after(records: Iterable[Record]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit after processing ``records``: last offset + 1 per partition."""
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    for r in records:
        cur = out.get(r.tp)
        if cur is None or r.offset + 1 > cur.offset:
            out[r.tp] = OffsetAndMetadata(r.offset + 1)
    return out


class Closeable:
    """A client that ``with`` closes on the way out, whether the block raised or not.

    Producer, Consumer and Admin each hold sockets (and a producer its pending
    records) that only ``close`` gives back; the ``with`` plumbing is written
    once here.
    """

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
