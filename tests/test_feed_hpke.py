"""Sealed feed records: HPKE (RFC 9180) inside a plain Avro single-object message.

Checked from outside as well as from inside: the message decodes with the
``avro`` package and the schema file alone, and it opens with an RFC 9180
base-mode receiver written here from the RFC (and the X-Wing draft) on bare
primitives, which first reproduces the RFC's own test vector A.1.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import uuid
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.signing.feedkeys import FeedKeyring
from broker.signing.feeds import (
    ENCRYPTED_FEED_RECORD,
    KEMS,
    X25519,
    XWING,
    FeedDecryptionError,
    FeedKeyError,
    FeedOpener,
    FeedPrivateKey,
    FeedPublicKey,
    _xwing_components,
    current_key,
    hpke_info,
    is_sealed,
    seal,
    seal_message,
)
from tests.helpers import CODEC

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "EncryptedFeedRecord.avsc"
MASH = "torbay-mash"
PLAINTEXT = b"a FeedRecord's single-object bytes, personal data inside"


# --------------------------------------------------------------------------------------
# An RFC 9180 base-mode receiver from the RFC's text, on bare primitives


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def rfc9180_open(
    kem_id: int, aead_id: int, shared_secret: bytes, info: bytes, aad: bytes, ct: bytes
) -> bytes:
    """KeySchedule (mode_base, HKDF-SHA256) then AEAD Open with sequence number 0."""
    suite = b"HPKE" + kem_id.to_bytes(2, "big") + b"\x00\x01" + aead_id.to_bytes(2, "big")

    def labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _extract(salt, b"HPKE-v1" + suite + label + ikm)

    def labeled_expand(prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
        return _expand(prk, n.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, n)

    context = (
        b"\x00"
        + labeled_extract(b"", b"psk_id_hash", b"")
        + labeled_extract(b"", b"info_hash", info)
    )
    secret = labeled_extract(shared_secret, b"secret", b"")
    nk = {0x0001: 16, 0x0002: 32}[aead_id]
    key = labeled_expand(secret, b"key", context, nk)
    nonce = labeled_expand(secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(nonce, ct, aad)


def dhkem_x25519_decap(enc: bytes, sk: x25519.X25519PrivateKey) -> bytes:
    """DHKEM(X25519, HKDF-SHA256) Decap, RFC 9180 section 4.1."""
    suite = b"KEM\x00\x20"
    dh = sk.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    kem_context = enc + sk.public_key().public_bytes_raw()
    prk = _extract(b"", b"HPKE-v1" + suite + b"eae_prk" + dh)
    return _expand(
        prk, (32).to_bytes(2, "big") + b"HPKE-v1" + suite + b"shared_secret" + kem_context, 32
    )


def xwing_decap(enc: bytes, seed: bytes) -> bytes:
    """X-Wing Decap (draft-connolly-cfrg-xwing-kem): SHA3-256 over both shared secrets."""
    expanded = hashlib.shake_256(seed).digest(96)
    sk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    sk_x = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = sk_m.decapsulate(ct_m)
    ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = sk_x.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + b"\\.//^\\").digest()


def test_the_reference_receiver_reproduces_rfc9180_vector_a1() -> None:
    """RFC 9180 A.1.1 (DHKEM(X25519), HKDF-SHA256, AES-128-GCM), sequence number 0."""
    sk_r = x25519.X25519PrivateKey.from_private_bytes(
        bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    )
    enc = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    ct = bytes.fromhex(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    shared = dhkem_x25519_decap(enc, sk_r)
    assert shared.hex() == "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc"
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    assert rfc9180_open(0x0020, 0x0001, shared, info, b"Count-0", ct) == (
        b"Beauty is truth, truth beauty"
    )


@pytest.mark.parametrize("kem", KEMS)
def test_a_sealed_record_opens_with_an_independent_rfc9180_receiver(kem: str) -> None:
    private = FeedPrivateKey.generate(kem)
    event_id = str(uuid.uuid4())
    record = seal(private.public(), MASH, event_id, PLAINTEXT)
    if kem == XWING:
        assert record["kem_id"] == 0x647A and len(record["enc"]) == 1120
        shared = xwing_decap(record["enc"], private.private_key)
    else:
        assert record["kem_id"] == 0x0020 and len(record["enc"]) == 32
        sk = x25519.X25519PrivateKey.from_private_bytes(private.private_key)
        shared = dhkem_x25519_decap(record["enc"], sk)
    assert (record["kdf_id"], record["aead_id"]) == (0x0001, 0x0002)
    info = b"safeshare.EncryptedFeedRecord/v1" + b"\x00\x0btorbay-mash" + b"\x00\x24"
    assert hpke_info(MASH, event_id) == info + event_id.encode()
    opened = rfc9180_open(
        record["kem_id"],
        record["aead_id"],
        shared,
        hpke_info(MASH, event_id),
        b"",
        record["ciphertext"],
    )
    assert opened == PLAINTEXT


def test_xwing_key_generation_is_the_drafts() -> None:
    """The public key is ML-KEM-768's then X25519's, both derived from the 32-byte seed."""
    private = FeedPrivateKey.generate(XWING)
    expanded = hashlib.shake_256(private.private_key).digest(96)
    m, x = _xwing_components(private.private_key)
    assert m.private_bytes_raw() == expanded[:64]
    assert x.private_bytes_raw() == expanded[64:]
    assert private.public().public_key == (
        m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
    )


# --------------------------------------------------------------------------------------
# Our own round trip, and what must not open


@pytest.mark.parametrize("kem", KEMS)
def test_round_trip_and_what_must_not_open(kem: str) -> None:
    private = FeedPrivateKey.generate(kem)
    event_id = str(uuid.uuid4())
    record = seal(private.public(), MASH, event_id, PLAINTEXT)
    assert PLAINTEXT not in record["ciphertext"] and record["key_id"] == private.id
    opener = FeedOpener(MASH, [private])
    assert opener.open(record) == PLAINTEXT
    # moved to another subscriber's feed, with or without relabelling it
    with pytest.raises(FeedDecryptionError, match="sealed for subscriber 'torbay-mash'"):
        FeedOpener("devon-mash", [private]).open(record)
    with pytest.raises(FeedDecryptionError, match="does not open"):
        FeedOpener("devon-mash", [private]).open(dict(record, subscriber="devon-mash"))
    # relabelled as another event
    with pytest.raises(FeedDecryptionError, match="does not open"):
        opener.open(dict(record, event_id=str(uuid.uuid4())))
    # tampered ciphertext or encapsulated key
    for name in ("ciphertext", "enc"):
        tampered = bytearray(record[name])
        tampered[len(tampered) // 2] ^= 1
        with pytest.raises(FeedDecryptionError, match="does not open"):
            opener.open(dict(record, **{name: bytes(tampered)}))
    # another key of the same subscriber
    other = FeedPrivateKey.generate(kem)
    with pytest.raises(FeedDecryptionError, match=f"no feed key with id {private.id}"):
        FeedOpener(MASH, [other]).open(record)
    # fresh every time
    assert seal(private.public(), MASH, event_id, PLAINTEXT)["enc"] != record["enc"]


def test_a_record_claiming_another_suite_is_refused() -> None:
    private = FeedPrivateKey.generate(XWING)
    record = seal(private.public(), MASH, str(uuid.uuid4()), PLAINTEXT)
    with pytest.raises(FeedDecryptionError, match="unsupported HPKE suite .*0x0001"):
        FeedOpener(MASH, [private]).open(dict(record, aead_id=1))


def test_malformed_keys_are_refused_with_one_line() -> None:
    with pytest.raises(FeedKeyError, match="MLKEM768-X25519 public key is 1216 bytes, this one"):
        FeedPublicKey(XWING, b"\x01" * 32)
    with pytest.raises(FeedKeyError, match="unknown feed key KEM 'RSA'"):
        FeedPrivateKey.generate("RSA")
    with pytest.raises(FeedKeyError, match="not base64"):
        FeedPublicKey.from_b64(X25519, "not base64!")


# --------------------------------------------------------------------------------------
# The message: plain Avro single-object encoding, readable by another Avro library


def test_the_message_is_avro_single_object_encoding_read_by_the_avro_package() -> None:
    private = FeedPrivateKey.generate(XWING)
    event_id = str(uuid.uuid4())
    data = seal_message(CODEC, private.public(), MASH, event_id, PLAINTEXT)
    assert is_sealed(CODEC, data) and not is_sealed(CODEC, b"\xc3\x01" + bytes(8))
    schema = avro.schema.parse(SCHEMA_FILE.read_text(encoding="utf-8"))
    # C3 01, then the schema's CRC-64-AVRO fingerprint (as the avro package computes
    # it from the file alone), then the Avro binary body
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema.fingerprint("CRC-64-AVRO")
    body = io.BytesIO(data[10:])
    decoded: Any = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(body))
    assert body.read() == b""  # nothing after the record
    assert decoded["subscriber"] == MASH and decoded["event_id"] == event_id
    assert decoded["key_id"] == private.id and decoded["kem_id"] == 0x647A
    assert FeedOpener(MASH, [private]).open(decoded) == PLAINTEXT
    assert CODEC.decode(data, ENCRYPTED_FEED_RECORD) == decoded


def test_every_field_of_the_schema_is_documented_and_labelled() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    names = [f["name"] for f in schema["fields"]]
    assert names[:3] == ["subscriber", "event_id", "key_id"]
    assert {"kem_id", "kdf_id", "aead_id", "enc", "ciphertext"} <= set(names)
    assert all(f["doc"].strip() and f["dataClass"] == "metadata" for f in schema["fields"])


# --------------------------------------------------------------------------------------
# Rotation


def test_rotation_new_records_use_the_new_key_old_ones_stay_readable(tmp_path: Path) -> None:
    ring = FeedKeyring(MASH)
    old = ring.new_key(X25519)
    new = ring.new_key(XWING)
    switch = 1_800_000_000_000
    keys = [
        FeedPublicKey(old.kem, old.public().public_key, not_after_ms=switch + 86_400_000),
        FeedPublicKey(new.kem, new.public().public_key, not_before_ms=switch),
    ]
    assert current_key(keys, switch - 1) == keys[0]
    assert current_key(keys, switch) == keys[1]  # the newer key wins once it starts
    assert current_key(keys, switch + 2 * 86_400_000) == keys[1]
    # a key that has not started yet is still used when nothing else is live
    assert current_key(keys[1:], switch - 1) == keys[1]
    assert current_key(keys[:1], switch + 2 * 86_400_000) is None  # the policy refuses this

    before = seal(current_key(keys, switch - 1), MASH, str(uuid.uuid4()), b"old")  # type: ignore[arg-type]
    after = seal(current_key(keys, switch + 1), MASH, str(uuid.uuid4()), b"new")  # type: ignore[arg-type]
    assert (before["key_id"], after["key_id"]) == (old.id, new.id)

    path = tmp_path / "keys" / f"{MASH}.json"
    ring.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = FeedKeyring.load(path)
    assert [k.id for k in loaded.keys] == [old.id, new.id]
    assert loaded.opener().open(before) == b"old"
    assert loaded.opener().open(after) == b"new"
    # a reader that dropped the old key can no longer read the old record, and says why
    with pytest.raises(FeedDecryptionError, match=f"no feed key with id {old.id}"):
        FeedOpener(MASH, loaded.keys[1:]).open(before)


def test_a_broken_keyring_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    path.write_text("{not json")
    with pytest.raises(FeedKeyError, match=r"ring.json: not a feed keyring \(not JSON\)"):
        FeedKeyring.load(path)
    ring = FeedKeyring(MASH)
    ring.new_key()
    ring.save(path)
    data = json.loads(path.read_text())
    data["keys"][0]["private_key"] = "AAAA"
    path.write_text(json.dumps(data))
    with pytest.raises(FeedKeyError, match=r"keys\[0\]: a MLKEM768-X25519 private key is 32"):
        FeedKeyring.load(path)
