"""The identity index kept on a compacted Kafka topic, and rebuilt from it after a restart.

One record per child: the key is the child's partnership pseudonym, the value
the features of the records seen for it (:class:`~broker.identity.linkage.Features`:
names, date of birth, postcode, NHS number, UPN), sealed with AES-256-GCM
under a key derived (HKDF-SHA256) from the partnership key, so the topic holds
no personal data in clear and only the router can read it. The pseudonym is the
associated data: a value moved to another key does not open. Compaction keeps
the latest value of each child; a tombstone forgets one (an unlink or a merge
writes the survivors' entries and tombstones the rest).

Value layout: ``b"SSI"``, one byte format version (1), the partnership key
version (2 bytes, big-endian), a 12-byte nonce, the AES-GCM ciphertext of the
UTF-8 JSON ``{"records": [features, ...], "anchor": [kind, value]}`` (the
anchor: what the pseudonym was derived from, for key rotation). After a key rotation new values
are sealed under the new key; old ones open with the key they name.

A child a person linked others into (broker/identity/decisions.py) also keeps
``"merged": {pseudonym: {"records": [...], "anchor": [...]}}`` (what an unlink
gives back) and ``"shares": ["<event id> <recipient>", ...]`` (what was shared
under the merged identity since). ``"replace": true`` marks the entry a link or
unlink wrote: a reader replaces the child's records with it instead of adding
to them (the child's earlier values, on the same partition, came before).
``"tentative": [i, ...]``: the positions of records a link below 0.99 brought
(``Index.add``), which are not evidence for another automatic link.
``"recipients": {subscriber: shown}``: who received records under the child
(shown: its copies showed the pseudonym), and ``"told": {pseudonym:
{subscriber: shown}}``: who was told of each link into it; both so that a link
or unlink is announced to exactly those feeds (broker/routing/identity_notices.py).
``"origin": {"event_id", "agency", "local_authority", "reviewed"}``: on a new
child's first entry, the event that started it and the candidate a review item
already pairs it with (or null), so that another router instance learning the
child can raise the review the two would have met in one index
(broker/routing/identity.py), and not one already raised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.identity.exceptions import IdentityError
from broker.identity.linkage import Features, Index
from broker.identity.pseudonym import PartnershipKeys
from broker.kafka.consumer import Consumer, catch_up
from broker.kafka.structs import Record, TopicPartition

MAGIC: Final = b"SSI\x01"
_INFO: Final = b"safeshare/identity-index/v1"


class IndexSealer:
    """Seals and opens identity-index values under the partnership keys."""

    def __init__(self, keys: PartnershipKeys) -> None:
        self._keys = keys
        self._aead: dict[int, AESGCM] = {}

    def _cipher(self, version: int) -> AESGCM:
        if version not in self._aead:
            try:
                secret = self._keys.keys[version]
            except KeyError:
                raise IdentityError(
                    f"identity index value sealed under unknown key v{version}"
                ) from None
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
            self._aead[version] = AESGCM(hkdf.derive(secret))
        return self._aead[version]

    def seal(
        self,
        pseudonym: str,
        records: Iterable[Features],
        anchor: tuple[str, str] | None = None,
        *,
        extra: Mapping[str, object] | None = None,
    ) -> bytes:
        version = self._keys.current
        obj: dict[str, object] = {"records": [f.to_json() for f in records]}
        if anchor is not None:
            obj["anchor"] = list(anchor)
        obj.update(extra or {})
        body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        nonce = os.urandom(12)
        sealed = self._cipher(version).encrypt(nonce, body, pseudonym.encode())
        return MAGIC + version.to_bytes(2, "big") + nonce + sealed

    def open(self, pseudonym: str, value: bytes) -> list[Features]:
        """The records of one entry (see :meth:`open_entry` for its anchor too)."""
        return self.open_entry(pseudonym, value)[0]

    def open_entry(
        self, pseudonym: str, value: bytes
    ) -> tuple[list[Features], tuple[str, str] | None]:
        e = self.open_full(pseudonym, value)
        return e.records, e.anchor

    def open_full(self, pseudonym: str, value: bytes) -> Entry:
        """Everything one sealed entry holds (IdentityError if it does not open)."""
        if value[:4] != MAGIC or len(value) < 4 + 2 + 12 + 16:
            raise IdentityError("identity index value is not a sealed index entry")
        version = int.from_bytes(value[4:6], "big")
        try:
            body = self._cipher(version).decrypt(value[6:18], value[18:], pseudonym.encode())
        except InvalidTag:
            raise IdentityError("identity index value does not open under its key") from None
        obj = json.loads(body)
        merged = {
            str(p): ([Features.from_json(r) for r in m["records"]], _anchor(m.get("anchor")))
            for p, m in (obj.get("merged") or {}).items()
        }
        return Entry(
            records=[Features.from_json(r) for r in obj["records"]],
            anchor=_anchor(obj.get("anchor")),
            merged=merged,
            shares=[str(x) for x in obj.get("shares") or ()],
            replace=bool(obj.get("replace")),
            tentative=[int(i) for i in obj.get("tentative") or ()],
            recipients=_recipients(obj.get("recipients")),
            told={str(p): _recipients(r) for p, r in (obj.get("told") or {}).items()},
            origin=_origin(obj.get("origin")),
        )


def _recipients(value: object) -> dict[str, bool]:
    return {str(k): bool(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _origin(value: object) -> dict[str, str | None]:
    if not isinstance(value, dict):
        return {}
    return {str(k): None if v is None else str(v) for k, v in value.items()}


def _anchor(value: object) -> tuple[str, str] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return str(value[0]), str(value[1])
    return None


@dataclass
class Entry:
    """One opened identity-index entry (see the module docstring)."""

    records: list[Features]
    anchor: tuple[str, str] | None
    merged: dict[str, tuple[list[Features], tuple[str, str] | None]] = field(
        default_factory=dict
    )
    shares: list[str] = field(default_factory=list)
    replace: bool = False
    tentative: list[int] = field(default_factory=list)
    recipients: dict[str, bool] = field(default_factory=dict)
    told: dict[str, dict[str, bool]] = field(default_factory=dict)
    origin: dict[str, str | None] = field(default_factory=dict)

    def add_to(self, index: Index, pseudonym: str) -> None:
        """Add the entry's records to ``index`` as the child ``pseudonym``'s."""
        unsure = set(self.tentative)
        for i, f in enumerate(self.records):
            index.add(pseudonym, f, 0.0 if i in unsure else 1.0)


def entry(
    sealer: IndexSealer, index: Index, pseudonym: str, *, replace: bool = False,
    origin: Mapping[str, str | None] | None = None,
) -> tuple[bytes, bytes | None]:
    """The topic record (key, value) for one child as the index now holds it
    (``origin``: a new child's, see the module docstring)."""
    records = index.records.get(pseudonym)
    if not records:
        return pseudonym.encode(), None
    extra: dict[str, object] = {}
    merged = index.merged.get(pseudonym)
    if merged:
        extra["merged"] = {
            p: {"records": [f.to_json() for f in rs], **({"anchor": list(a)} if a else {})}
            for p, (rs, a) in merged.items()
        }
    if index.shares.get(pseudonym):
        extra["shares"] = list(index.shares[pseudonym])
    if index.recipients.get(pseudonym):
        extra["recipients"] = dict(index.recipients[pseudonym])
    if index.told.get(pseudonym):
        extra["told"] = {p: dict(r) for p, r in index.told[pseudonym].items()}
    if replace:
        extra["replace"] = True
    if origin:
        extra["origin"] = dict(origin)
    if unsure := index.tentative_of(pseudonym):
        extra["tentative"] = unsure
    return pseudonym.encode(), sealer.seal(
        pseudonym, records, index.anchors.get(pseudonym), extra=extra
    )


def rebuild(
    consumer: Consumer, topic: str, index: Index, sealer: IndexSealer, *, timeout_s: float = 30.0
) -> int:
    """Read the identity topic to its end into ``index``; the number of children loaded.

    A value that does not open is an error (fail closed: linking against a
    partial index would start duplicate children).
    """
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    latest: dict[str, bytes | None] = {}

    def handle(r: Record) -> None:
        if r.key is not None:
            latest[r.key.decode()] = r.value

    behind = catch_up(consumer, tps, handle, timeout_s=timeout_s)
    if behind:
        raise IdentityError(f"identity index {topic} not read to its end in {timeout_s} s")
    for pseudonym, value in latest.items():
        if value is None:
            index.remove(pseudonym)
            continue
        index.remove(pseudonym)
        e = sealer.open_full(pseudonym, value)
        e.add_to(index, pseudonym)
        if e.anchor is not None:
            index.anchors[pseudonym] = e.anchor
        index.merged[pseudonym] = e.merged
        index.shares[pseudonym] = e.shares
        index.recipients[pseudonym] = e.recipients
        index.told[pseudonym] = e.told
    return sum(1 for v in latest.values() if v is not None)
