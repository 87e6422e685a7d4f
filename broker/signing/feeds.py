"""Confidential feeds: each copy sealed to its subscriber with HPKE (RFC 9180).

So that neither Kafka operators nor anyone else who can read a feed topic can
read a subscriber's copies, for as long as the records are kept (decades: a
looked-after child's records are kept until their 75th birthday, so the
default KEM is post-quantum against harvest-now-decrypt-later).

A sealed copy is a ``safeshare.EncryptedFeedRecord`` (schemas/), written with
Avro single-object encoding like every other message. It is HPKE base mode,
single shot, from ``cryptography.hazmat.primitives.hpke``:

- KEM ``MLKEM768-X25519`` (X-Wing, KEM id 0x647A, the default for new keys) or
  ``DHKEM-X25519`` (DHKEM(X25519, HKDF-SHA256), 0x0020); KDF HKDF-SHA256
  (0x0001); AEAD AES-256-GCM (0x0002);
- ``info`` = :func:`hpke_info`: the label ``safeshare.EncryptedFeedRecord/v1``
  then the subscriber id and the event id, each as a 2-byte big-endian length
  and UTF-8 bytes. So a ciphertext moved to another subscriber's feed or
  relabelled with another event id does not open. The AEAD's associated data
  is empty (the single-shot API; RFC 9180 section 8.1 puts such context in
  ``info``);
- the plaintext is the FeedRecord's own single-object encoding (or an
  IdentityNotice's, sealed under its notice id: broker/routing/identity_notices.py);
- ``enc`` and ``ciphertext`` are HPKE's ``enc`` and ``ct`` as RFC 9180 defines
  them, so any HPKE implementation with the subscriber's private key opens it.

Keys: a subscriber may have several (rotation, :func:`current_key`); each has
an id, the first 8 bytes (hex) of SHA-256 of the KEM id (2 bytes, big endian)
and the raw public key, which the record names so a reader picks the right
private key. Private keys are kept in a keyring file (:mod:`.feedkeys`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from broker.codec import Codec
from broker.codec.exceptions import CodecError
from broker.errors import SafeshareError

ENCRYPTED_FEED_RECORD = "safeshare.EncryptedFeedRecord"
FEED_RECORD = "safeshare.FeedRecord"
IDENTITY_NOTICE = "safeshare.IdentityNotice"
INFO_LABEL = b"safeshare.EncryptedFeedRecord/v1"

XWING = "MLKEM768-X25519"
X25519 = "DHKEM-X25519"
DEFAULT_KEM = XWING
KEMS = (XWING, X25519)

#: IANA HPKE identifiers (RFC 9180 section 7; draft-ietf-hpke-pq for 0x647A).
KEM_IDS = {XWING: 0x647A, X25519: 0x0020}
KDF_HKDF_SHA256 = 0x0001
AEAD_AES_256_GCM = 0x0002
_KEM_BY_ID = {v: k for k, v in KEM_IDS.items()}
_HPKE_KEM = {XWING: hpke.KEM.MLKEM768_X25519, X25519: hpke.KEM.X25519}
_SUITES = {
    name: hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    for name, kem in _HPKE_KEM.items()
}
#: Raw public key and private key sizes (X-Wing: ML-KEM-768 pk || X25519 pk; a 32-byte seed).
PUBLIC_SIZE = {XWING: 1184 + 32, X25519: 32}
PRIVATE_SIZE = {XWING: 32, X25519: 32}


class FeedDecryptionError(SafeshareError):
    """A feed record cannot be opened: no key for it, wrong subscriber or event, or tampered."""


class FeedKeyError(SafeshareError):
    """A feed key is malformed (wrong size, unknown KEM) or cannot be used."""


def key_id(kem: str, public_key: bytes) -> str:
    """A feed key's id: first 8 bytes of SHA-256(KEM id, 2 bytes BE || raw public key), hex."""
    return hashlib.sha256(KEM_IDS[kem].to_bytes(2, "big") + public_key).digest()[:8].hex()


def hpke_info(subscriber: str, event_id: str) -> bytes:
    """The HPKE ``info`` binding a sealed copy to its subscriber and event."""
    out = bytearray(INFO_LABEL)
    for part in (subscriber, event_id):
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def _check_kem(kem: str) -> None:
    if kem not in KEM_IDS:
        raise FeedKeyError(f"unknown feed key KEM {kem!r}; use one of {', '.join(KEMS)}")


def _xwing_components(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    """X-Wing key generation from its 32-byte seed (draft-connolly-cfrg-xwing-kem):
    SHAKE256(seed, 96) gives the ML-KEM-768 seed (d || z) and the X25519 private key."""
    digest = hashes.Hash(hashes.SHAKE256(96))
    digest.update(seed)
    expanded = digest.finalize()
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


@lru_cache(maxsize=256)
def _hpke_public(kem: str, raw: bytes) -> Any:
    """The ``cryptography`` public key object for a raw public key (cached: the
    router seals to the same few keys all day)."""
    _check_kem(kem)
    if len(raw) != PUBLIC_SIZE[kem]:
        raise FeedKeyError(
            f"a {kem} public key is {PUBLIC_SIZE[kem]} bytes, this one is {len(raw)}"
        )
    try:
        if kem == X25519:
            return x25519.X25519PublicKey.from_public_bytes(raw)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
            x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
        )
    except ValueError as exc:
        raise FeedKeyError(f"not a valid {kem} public key: {exc}") from None


@dataclass(frozen=True)
class FeedPublicKey:
    """A subscriber's feed key as the policy lists it; the router seals to it.

    ``not_before_ms``/``not_after_ms`` bound when the router *seals* to it
    (:func:`current_key`); reading is never limited by them.
    """

    kem: str
    public_key: bytes
    not_before_ms: int | None = None
    not_after_ms: int | None = None
    id: str = field(default="")

    def __post_init__(self) -> None:
        _hpke_public(self.kem, self.public_key)  # refuses a bad KEM, size or point
        if not self.id:
            object.__setattr__(self, "id", key_id(self.kem, self.public_key))

    @classmethod
    def from_b64(
        cls,
        kem: str,
        public_key_b64: str,
        not_before_ms: int | None = None,
        not_after_ms: int | None = None,
    ) -> FeedPublicKey:
        try:
            raw = base64.b64decode(public_key_b64, validate=True)
        except ValueError:
            raise FeedKeyError("public_key is not base64") from None
        return cls(kem, raw, not_before_ms, not_after_ms)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    def retired_at(self, now_ms: int) -> bool:
        return self.not_after_ms is not None and now_ms > self.not_after_ms

    def started_at(self, now_ms: int) -> bool:
        return self.not_before_ms is None or now_ms >= self.not_before_ms


def current_key(keys: Sequence[FeedPublicKey], now_ms: int) -> FeedPublicKey | None:
    """The key new copies are sealed to at ``now_ms``.

    Among keys not retired (``not_after`` unset or not yet passed): the one
    that started latest (``not_before`` passed or unset; on a tie the later in
    the list). If none has started yet, the one that starts first: sealing to
    a key the subscriber has published is still confidential. None only when
    every key is retired, which the policy refuses at load (one key must have
    no ``not_after``), so a confidential feed never falls back to plaintext.
    """
    live = [k for k in keys if not k.retired_at(now_ms)]
    started = [k for k in live if k.started_at(now_ms)]
    if started:
        best = started[0]
        for k in started[1:]:
            if (k.not_before_ms or -1) >= (best.not_before_ms or -1):
                best = k
        return best
    return min(live, key=lambda k: k.not_before_ms or 0) if live else None


@dataclass(frozen=True)
class FeedPrivateKey:
    """A subscriber's private feed key: the KEM and its standard private encoding
    (X-Wing: the 32-byte seed; DHKEM-X25519: the 32-byte X25519 scalar)."""

    kem: str
    private_key: bytes
    created_at: str = ""

    @classmethod
    def generate(cls, kem: str = DEFAULT_KEM, created_at: str = "") -> FeedPrivateKey:
        _check_kem(kem)
        return cls(kem, os.urandom(PRIVATE_SIZE[kem]), created_at)

    def __post_init__(self) -> None:
        _check_kem(self.kem)
        if len(self.private_key) != PRIVATE_SIZE[self.kem]:
            raise FeedKeyError(
                f"a {self.kem} private key is {PRIVATE_SIZE[self.kem]} bytes,"
                f" this one is {len(self.private_key)}"
            )

    def hpke_private(self) -> Any:
        """The ``cryptography`` private key object HPKE opens with."""
        if self.kem == X25519:
            return x25519.X25519PrivateKey.from_private_bytes(self.private_key)
        return hpke.MLKEM768X25519PrivateKey(*_xwing_components(self.private_key))

    def public(self) -> FeedPublicKey:
        if self.kem == X25519:
            raw = x25519.X25519PrivateKey.from_private_bytes(self.private_key).public_key()
            return FeedPublicKey(self.kem, raw.public_bytes_raw())
        m, x = _xwing_components(self.private_key)
        pub = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
        return FeedPublicKey(self.kem, pub)

    @property
    def id(self) -> str:
        return self.public().id


def seal(key: FeedPublicKey, subscriber: str, event_id: str, plaintext: bytes) -> dict[str, Any]:
    """An EncryptedFeedRecord (in-memory shape) holding ``plaintext`` sealed to ``key``."""
    sealed = _SUITES[key.kem].encrypt(
        plaintext, _hpke_public(key.kem, key.public_key), info=hpke_info(subscriber, event_id)
    )
    n_enc = _HPKE_KEM[key.kem].enc_length()
    return {
        "subscriber": subscriber,
        "event_id": event_id,
        "key_id": key.id,
        "kem_id": KEM_IDS[key.kem],
        "kdf_id": KDF_HKDF_SHA256,
        "aead_id": AEAD_AES_256_GCM,
        "enc": sealed[:n_enc],
        "ciphertext": sealed[n_enc:],
    }


class FeedOpener:
    """Opens a subscriber's sealed copies with its private keys, chosen by key id.

    Keeps the ``cryptography`` key objects, so opening many records derives
    each X-Wing key once.
    """

    def __init__(self, subscriber: str, keys: Iterable[FeedPrivateKey]) -> None:
        self.subscriber = subscriber
        self._keys: dict[str, tuple[str, Any]] = {}
        for k in keys:
            self._keys[k.id] = (k.kem, k.hpke_private())

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def open_feed_record(self, codec: Codec, data: bytes) -> dict[str, Any]:
        """Decode a sealed message, open it, and decode the FeedRecord inside."""
        return self.open_message(codec, data)[1]

    def open_message(self, codec: Codec, data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """The EncryptedFeedRecord of a sealed message and the FeedRecord (or
        IdentityNotice) inside it (:meth:`open_typed` says which)."""
        outer, inner, _ = self.open_typed(codec, data)
        return outer, inner

    def open_typed(
        self, codec: Codec, data: bytes
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The EncryptedFeedRecord, the record inside and its schema: a FeedRecord, or
        an IdentityNotice (broker/routing/identity_notices.py).

        The FeedRecord must name the same subscriber and event as the envelope
        (the notice: the same subscriber and notice id; it always does when the
        router wrote it; anything else is refused).
        """
        outer = codec.decode(data, ENCRYPTED_FEED_RECORD)
        plaintext = self.open(outer)
        schema = feed_schema(codec, plaintext)
        inner = codec.decode(plaintext, schema)
        named = (
            (inner["subscriber"], inner["notice_id"])
            if schema == IDENTITY_NOTICE
            else (inner["decision"]["subscriber"], inner["event"]["event_id"])
        )
        if named != (outer["subscriber"], outer["event_id"]):
            raise FeedDecryptionError(
                f"sealed record for event {outer['event_id']} holds a copy of another"
                " event or for another subscriber"
            )
        return outer, inner, schema

    def open(self, record: Mapping[str, Any]) -> bytes:
        """The plaintext of an EncryptedFeedRecord, or :class:`FeedDecryptionError`."""
        kid = record["key_id"]
        if record["subscriber"] != self.subscriber:
            raise FeedDecryptionError(
                f"record is sealed for subscriber {record['subscriber']!r}, not {self.subscriber!r}"
            )
        found = self._keys.get(kid)
        if found is None:
            raise FeedDecryptionError(
                f"no feed key with id {kid} for {self.subscriber!r} (have:"
                f" {', '.join(self.key_ids) or 'none'}); an old key must stay in the keyring"
            )
        kem, private = found
        suite = (record["kem_id"], record["kdf_id"], record["aead_id"])
        if suite != (KEM_IDS[kem], KDF_HKDF_SHA256, AEAD_AES_256_GCM):
            raise FeedDecryptionError(
                "unsupported HPKE suite kem/kdf/aead = " + "/".join(f"0x{i:04x}" for i in suite)
            )
        try:
            return _SUITES[kem].decrypt(
                record["enc"] + record["ciphertext"],
                private,
                info=hpke_info(self.subscriber, record["event_id"]),
            )
        except (InvalidTag, ValueError):
            raise FeedDecryptionError(
                f"feed record for event {record['event_id']} does not open for"
                f" {self.subscriber!r} with key {kid} (tampered, or moved from another"
                " subscriber or event)"
            ) from None


def seal_message(
    codec: Codec, key: FeedPublicKey, subscriber: str, event_id: str, plaintext: bytes
) -> bytes:
    """:func:`seal`, as the EncryptedFeedRecord's single-object encoding."""
    return codec.encode(seal(key, subscriber, event_id, plaintext), ENCRYPTED_FEED_RECORD)


def feed_schema(codec: Codec, data: bytes) -> str:
    """What a plain feed message is: an IdentityNotice by its fingerprint, else a
    FeedRecord (decoding it as one says what is wrong with anything else)."""
    try:
        return IDENTITY_NOTICE if codec.schema_name_of(data) == IDENTITY_NOTICE else FEED_RECORD
    except CodecError:
        return FEED_RECORD


def is_sealed(codec: Codec, data: bytes) -> bool:
    """Whether ``data`` is an EncryptedFeedRecord (by its single-object fingerprint)."""
    try:
        return codec.schema_name_of(data) == ENCRYPTED_FEED_RECORD
    except CodecError:
        return False


def kem_name(kem_id: int) -> str:
    """The KEM name of an IANA KEM id, for messages."""
    return _KEM_BY_ID.get(kem_id, f"0x{kem_id:04x}")
