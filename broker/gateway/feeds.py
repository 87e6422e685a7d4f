"""Reading a subscriber's feed for the gateway: pages from a cursor, and live.

The gateway reads ``read_committed`` without a consumer group: the position is
the caller's ``cursor`` (``PARTITION:OFFSET`` pairs, comma separated; the next
offset to read in each partition, missing partitions from the start), so a
subscriber can re-read and two readers never disturb each other.

Confidential feeds: the gateway holds no subscriber's private feed key (a
gateway that could open every sealed copy would undo what sealing is for), so
a sealed copy is returned as it is: the EncryptedFeedRecord's bytes (base64)
with its event id and key id, for the subscriber to open with its keyring
(``FeedKeyring.opener().open_message``). Plain copies are returned as the
FeedRecord's JSON form; a plain identity notice (a link or unlink of the feed's
children, broker/routing/identity_notices.py) as ``identity_notice``, its id
in ``event_id``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

from broker.codec import Codec
from broker.codec.exceptions import CodecError
from broker.errors import SafeshareError
from broker.gateway.consultations import Consulted
from broker.kafka.consumer import Consumer, make_consumer
from broker.kafka.structs import Record, TopicPartition
from broker.signing.feeds import ENCRYPTED_FEED_RECORD, IDENTITY_NOTICE, feed_schema, is_sealed

FEED_RECORD = "safeshare.FeedRecord"
CURSOR = re.compile(r"^\d{1,4}:\d{1,19}(,\d{1,4}:\d{1,19})*$")
CATCH_UP_S = 5.0


class BadCursor(ValueError):
    """A cursor that is not ``PARTITION:OFFSET[,...]`` or names no partition of the feed."""


def parse_cursor(text: str | None) -> dict[int, int]:
    if not text:
        return {}
    if not CURSOR.match(text):
        raise BadCursor("cursor: expected PARTITION:OFFSET pairs separated by commas")
    out: dict[int, int] = {}
    for pair in text.split(","):
        p, o = pair.split(":")
        out[int(p)] = int(o)
    return out


def format_cursor(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


@dataclass(frozen=True)
class Item:
    """One feed record as the gateway hands it over; ``disclosed`` is false for a
    record it could not read (only its coordinates are given: not a consultation)."""

    json: dict[str, Any]
    consulted: Consulted
    disclosed: bool = True


def item_of(codec: Codec, r: Record) -> Item:
    """The record as the API gives it. A record the gateway cannot decode (a schema it
    does not know yet, bytes no router wrote) is handed over as its coordinates and a
    problem, so the feed is never stuck at it and the cursor moves past it; nothing
    of its content is shown."""
    value = r.value or b""
    where = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
    source = ""
    try:
        if is_sealed(codec, value):
            outer = codec.decode(value, ENCRYPTED_FEED_RECORD)
            event_id = str(outer["event_id"])
            body = {**where, "event_id": event_id, "sealed": True, "key_id": outer["key_id"],
                    "message": base64.b64encode(value).decode("ascii"), "record": None}
        elif feed_schema(codec, value) == IDENTITY_NOTICE:
            notice = codec.decode(value, IDENTITY_NOTICE)
            event_id = str(notice["notice_id"])
            body = {**where, "event_id": event_id, "sealed": False, "key_id": None,
                    "message": None, "record": None,
                    "identity_notice": codec.to_json(notice, IDENTITY_NOTICE)}
        else:
            record = codec.decode(value, FEED_RECORD)
            event_id = str(record["event"]["event_id"])
            source = str((record["event"].get("source") or {}).get("agency_id") or "")
            body = {**where, "event_id": event_id, "sealed": False, "key_id": None,
                    "message": None, "record": codec.to_json(record, FEED_RECORD)}
    except CodecError as exc:
        body = {**where, "event_id": "", "sealed": False, "key_id": None, "message": None,
                "record": None, "problem": f"{type(exc).__name__}: the gateway cannot decode"
                " this record with the schemas and keys it holds; nothing of it is shown"}
        return Item(body, Consulted("", r.topic, r.partition, r.offset,
                                    hashlib.sha256(value).hexdigest(), ""), disclosed=False)
    return Item(body, Consulted(event_id, r.topic, r.partition, r.offset,
                                hashlib.sha256(value).hexdigest(), source))


class FeedCursor:
    """A group-less read_committed consumer of one feed, positioned at a cursor."""

    def __init__(self, bootstrap: str, topic: str, cursor: dict[int, int]) -> None:
        self.topic = topic
        self._consumer: Consumer = make_consumer(bootstrap, group_id=None)
        try:
            parts = self._consumer.partitions_for_topic(topic) or set()
            deadline = time.monotonic() + CATCH_UP_S
            while not parts and time.monotonic() < deadline:
                time.sleep(0.05)
                parts = self._consumer.partitions_for_topic(topic) or set()
            if not parts:  # no metadata yet: not "an empty feed"
                raise SafeshareError(f"no partitions of {topic} known after {CATCH_UP_S:.0f} s")
            unknown = sorted(set(cursor) - parts)
            if unknown:
                raise BadCursor(f"cursor: the feed has no partition {unknown[0]}")
            self._tps = [TopicPartition(topic, p) for p in sorted(parts)]
            self._consumer.assign(self._tps)
            for tp in self._tps:
                if tp.partition in cursor:
                    self._consumer.seek(tp, cursor[tp.partition])
                else:
                    self._consumer.seek_to_beginning(tp)
        except BaseException:
            self._consumer.close()
            raise

    def positions(self) -> dict[int, int]:
        return {tp.partition: self._consumer.position(tp) for tp in self._tps}

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        return self._consumer.poll_records(timeout_ms=timeout_ms, max_records=max_records)

    def page(self, limit: int, wait_ms: int) -> list[Record]:
        """Up to ``limit`` records: what is committed now, or (``wait_ms``) the first to come."""
        ends = self._consumer.end_offsets(self._tps)
        out: list[Record] = []
        start = time.monotonic()
        while len(out) < limit:
            out.extend(self.poll(100, limit - len(out)))
            caught_up = all(self._consumer.position(tp) >= ends[tp] for tp in self._tps)
            waited = time.monotonic() - start
            if caught_up and (out or waited * 1000 >= wait_ms):
                break
            if waited >= CATCH_UP_S + wait_ms / 1000:
                break
        return out

    def close(self) -> None:
        self._consumer.close()
