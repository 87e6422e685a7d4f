"""The gateway's idempotency memory, rebuilt from the ingest topic after a restart.

Every record the gateway publishes carries, in its own headers, the request it
came from (``X-Request-ID`` and the SHA-256 of the request body) and who
signed it. The record and its headers are one write, so what the memory needs
is committed exactly when the event is: no second topic to keep in step, no
transaction per request. When the gateway first publishes for an agency (or
is asked for one of its receipts) it reads the newest records of that
agency's ingest topic (``read_committed``, at most ``limit`` per partition)
and learns, for each, the receipt it gave (event id, digest of the bytes,
coordinates, signer) and the request id with its body digest. A retry after a
restart then gets the same receipts and sends nothing; the same request id
with another body is a conflict (409). Events the agency published with its
own Kafka client are learnt too (``signed_by`` from their signature).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.codec import Codec
from broker.codec.exceptions import CodecError
from broker.errors import SafeshareError
from broker.intake import ENVELOPE
from broker.kafka.consumer import catch_up, make_consumer
from broker.kafka.structs import Record, TopicPartition

#: ``X-Request-ID`` and body digest, ``<id>\n<sha256 hex>``.
REQUEST_HEADER = "safeshare-gateway-request"
#: ``agency``, ``gateway`` or ``none`` (the receipt's ``signed_by``).
SIGNED_BY_HEADER = "safeshare-gateway-signed-by"
RECALL_TIMEOUT_S = 60.0
METADATA_S = 5.0


def headers(request_id: str | None, body_digest: str, signed_by: str) -> list[tuple[str, bytes]]:
    out = [(SIGNED_BY_HEADER, signed_by.encode())]
    if request_id:
        out.append((REQUEST_HEADER, f"{request_id}\n{body_digest}".encode()))
    return out


@dataclass(frozen=True)
class Recalled:
    """One record of the ingest topic as the gateway's memory needs it."""

    event_id: str
    digest: str
    topic: str
    partition: int
    offset: int
    signed_by: str
    request_id: str | None
    body_digest: str | None


def _recalled(codec: Codec, r: Record) -> Recalled | None:
    value = r.value or b""
    heads = dict(r.headers)
    try:
        event = codec.decode(value, ENVELOPE)
    except CodecError:
        return None  # not an event the router would take either
    by = heads.get(SIGNED_BY_HEADER, b"").decode("ascii", "replace") or (
        "agency" if event.get("signature") is not None else "none")
    request_id = body = None
    if REQUEST_HEADER in heads:
        request_id, _, body = heads[REQUEST_HEADER].decode("utf-8", "replace").partition("\n")
    return Recalled(str(event["event_id"]), hashlib.sha256(value).hexdigest(), r.topic,
                    r.partition, r.offset, by, request_id, body or None)


def recall(bootstrap: str, topic: str, codec: Codec, limit: int,
           learn: Callable[[Recalled], None], *, timeout_s: float = RECALL_TIMEOUT_S) -> None:
    """Pass the newest ``limit`` records of each partition of ``topic``, oldest
    first, to ``learn``. Raises SafeshareError if the end is not reached in time
    (the caller must not publish on a memory it could not rebuild)."""
    consumer = make_consumer(bootstrap, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + METADATA_S
        while not parts and time.monotonic() < deadline:
            time.sleep(0.05)  # metadata not fetched yet
            parts = consumer.partitions_for_topic(topic) or set()
        if not parts:  # fail closed: no memory rebuilt, no publishing for this agency
            raise SafeshareError(f"{topic}: no partitions known after {METADATA_S:.0f} s")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        for tp in tps:
            if ends[tp] - limit > consumer.position(tp):
                consumer.seek(tp, ends[tp] - limit)

        def handle(r: Record) -> None:
            got = _recalled(codec, r)
            if got is not None:
                learn(got)

        behind = catch_up(consumer, tps, handle, timeout_s=timeout_s)
        if behind:
            raise SafeshareError(f"{topic}: not read to its end in {timeout_s:.0f} s")
    finally:
        consumer.close()
