"""Log key files, signed key lists, rotation and the key ring."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from broker.audit import note
from broker.audit.exceptions import AuditError, KeyFormatError, MalformedError, VerificationError
from broker.audit.keys import (
    KeyEntry,
    KeyList,
    KeyRing,
    initial_key_list,
    read_private_key,
    read_vkeys,
    rotate,
    write_private_key,
    write_vkeys,
)
from broker.audit.leaf import LeafKind
from broker.audit.note import Ed25519Signer

ORIGIN = "safeshare.example/audit/3"


def test_private_key_files_are_0600_and_checked(tmp_path: Path) -> None:
    s = Ed25519Signer.generate(ORIGIN)
    path = tmp_path / "log.key"
    write_private_key(path, s.skey)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Ed25519Signer.from_skey(read_private_key(path)).vkey == s.vkey
    with pytest.raises(AuditError, match="refusing to overwrite"):
        write_private_key(path, s.skey)
    os.chmod(path, 0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        read_private_key(path)
    os.chmod(path, 0o600)
    vk = tmp_path / "log.pub"
    write_vkeys(vk, [s.vkey])
    vk.write_text("# the log key\n\n" + vk.read_text())
    assert read_vkeys(vk) == [s.vkey]
    vk.write_text("not a key\n")
    with pytest.raises(KeyFormatError):
        read_vkeys(vk)


def test_key_list_text_round_trip_and_strictness() -> None:
    a, b = Ed25519Signer.generate(ORIGIN), Ed25519Signer.generate(ORIGIN)
    kl = KeyList(ORIGIN, 2, (KeyEntry(a.vkey, 10, 20), KeyEntry(b.vkey, 15, None)))
    text = kl.text()
    assert text == (
        f"safeshare-audit-keylist/v1\n{ORIGIN}\n2\nkey {a.vkey} 10 20\nkey {b.vkey} 15 -\n"
    )
    assert KeyList.parse(text) == kl
    other = Ed25519Signer.generate("other.example/log")
    for bad in [
        text[:-1],
        text.replace("\n2\n", "\n02\n"),
        text.replace(" 10 20", " 10 5"),
        text.replace("keylist/v1", "keylist/v2"),
        text.replace(f"key {b.vkey} 15 -", f"key {a.vkey} 15 -"),
        text.replace(b.vkey, other.vkey),
        text + "extra\n",
    ]:
        with pytest.raises(MalformedError):
            KeyList.parse(bad)


def test_rotation_chain_keeps_old_keys_verifiable() -> None:
    k1, k2, k3 = (Ed25519Signer.generate(ORIGIN) for _ in range(3))
    kl1, signed1 = initial_key_list(k1, now_ms=1000)
    kl2, signed2, leaf2 = rotate(kl1, old_signer=k1, new_signer=k2, now_ms=5000, overlap_ms=500)
    kl3, signed3, leaf3 = rotate(kl2, old_signer=k2, new_signer=k3, now_ms=9000, overlap_ms=500)
    assert leaf2.kind is LeafKind.KEY_ROTATION and leaf2.time_ms == 5000
    assert leaf2.event_digest == hashlib.sha256(signed2).hexdigest()
    assert [k.not_after_ms for k in kl3.keys] == [5500, 9500, None]
    # The rotation note carries the old and the new key's signatures.
    assert len(note.open(signed2, [k1.verifier(), k2.verifier()]).sigs) == 2

    ring = KeyRing([k1.vkey])
    for s in (signed1, signed2, signed3):
        ring.add_key_list(s)
    assert ring.version(ORIGIN) == 3
    assert {v.vkey for v in ring.verifiers(origin=ORIGIN)} == {k1.vkey, k2.vkey, k3.vkey}
    w1 = ring.window(ORIGIN, k1.key_id)
    assert w1 is not None and w1.valid_at(5500) and not w1.valid_at(5501)
    assert ring.find(ORIGIN, k3.key_id) == k3.verifier()


def test_key_ring_refuses_gaps_strangers_and_retired_keys() -> None:
    k1, k2, k3 = (Ed25519Signer.generate(ORIGIN) for _ in range(3))
    kl1, signed1 = initial_key_list(k1, now_ms=0)
    kl2, signed2, _ = rotate(kl1, old_signer=k1, new_signer=k2, now_ms=10, overlap_ms=5)
    _, signed3, _ = rotate(kl2, old_signer=k2, new_signer=k3, now_ms=20, overlap_ms=5)
    ring = KeyRing([k1.vkey])
    ring.add_key_list(signed1)
    with pytest.raises(VerificationError, match="has version 3; expected 2"):
        ring.add_key_list(signed3)
    ring.add_key_list(signed2)
    # k1 is retired in version 2: it cannot introduce a key any more.
    evil = Ed25519Signer.generate(ORIGIN)
    evil_list = KeyList(ORIGIN, 3, (*kl2.keys, KeyEntry(evil.vkey, 30, None)))
    with pytest.raises(VerificationError, match="not signed by a current key"):
        ring.add_key_list(evil_list.sign([k1, evil]))
    # A stranger cannot start the chain.
    stranger = Ed25519Signer.generate(ORIGIN)
    with pytest.raises(VerificationError):
        KeyRing([k1.vkey]).add_key_list(initial_key_list(stranger, now_ms=0)[1])
    with pytest.raises(AuditError):
        KeyRing([])
