"""Kafka records as the router hands them to the core and names them in log lines.

Log lines carry ``topic[partition]@offset`` and event ids, never anything
about a child.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.kafka.exceptions import KafkaError
from broker.kafka.structs import Record, TopicPartition
from broker.routing.core import Inbound


def _inbound(r: Record) -> Inbound:
    return Inbound(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)


def _where(r: Record) -> str:
    return f"{r.topic}[{r.partition}]@{r.offset}"


def _span(batches: Mapping[TopicPartition, list[Record]]) -> str:
    """``topic[p]@first-last`` for each partition of a batch."""
    return ", ".join(
        f"{tp.topic}[{tp.partition}]@{recs[0].offset}-{recs[-1].offset}"
        for tp, recs in batches.items()
        if recs
    )


def _describe(exc: BaseException) -> str:
    """An error for a log line: Kafka's messages in full (they name topics and
    brokers); of any other error only its type, as its message might quote data."""
    if isinstance(exc, KafkaError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} (message withheld from the log)"
