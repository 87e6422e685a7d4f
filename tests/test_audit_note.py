"""C2SP signed notes, checked against golang.org/x/mod/sumdb/note's published test vectors.

Vectors are from golang.org/x/mod sumdb/note/note_test.go (TestNewVerifier,
TestNewSigner, TestSign, TestVerifierList, TestOpen) and the package doc.
"""

from __future__ import annotations

import pytest

from broker.audit import note
from broker.audit.exceptions import (
    InvalidSignatureError,
    KeyFormatError,
    MalformedError,
    UnverifiedNoteError,
    VerificationError,
)
from broker.audit.note import Ed25519Signer, Ed25519Verifier, Signature

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
PETER_SIG = "— PeterNeumann " + PETER_B64 + "\n"
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
ENOCH_SIG = "— EnochRoot " + ENOCH_B64 + "\n"
PETER = Signature(
    "PeterNeumann",
    0xC74F20A3,
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
)
ENOCH = Signature(
    "EnochRoot",
    0xAF0CFE78,
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=",
)


def test_go_verifier_key_parses_and_round_trips() -> None:
    v = Ed25519Verifier.from_vkey(PETER_VKEY)
    assert v.name == "PeterNeumann"
    assert v.key_id == 0xC74F20A3
    assert v.vkey == PETER_VKEY


def test_every_mangled_verifier_key_is_refused() -> None:
    b = PETER_VKEY.encode()
    bad: list[str] = []
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i != 0 or j != len(b):
                bad.append(b[i:j].decode())
    for i in range(len(b)):
        bad.append((b[:i] + bytes([b[i] + 1]) + b[i + 1 :]).decode())
    bad.append("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    bad.append("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    for k in bad:
        with pytest.raises(KeyFormatError):
            Ed25519Verifier.from_vkey(k)
            pytest.fail(f"accepted mangled vkey {k!r}")


def test_go_private_key_parses_and_matches_its_verifier() -> None:
    s = Ed25519Signer.from_skey(PETER_SKEY)
    assert s.skey == PETER_SKEY
    assert s.vkey == PETER_VKEY
    b = PETER_SKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i == 0 and j == len(b):
                continue
            with pytest.raises(KeyFormatError):
                Ed25519Signer.from_skey(b[i:j].decode())
    for i in range(len(b)):
        with pytest.raises(KeyFormatError):
            Ed25519Signer.from_skey((b[:i] + bytes([b[i] + 1]) + b[i + 1 :]).decode())


def test_sign_reproduces_the_go_note_byte_for_byte() -> None:
    signer = Ed25519Signer.from_skey(PETER_SKEY)
    want = (TEXT + "\n" + PETER_SIG).encode()
    assert note.sign(TEXT, [signer]) == want
    # An existing signature by the same key is replaced, not duplicated.
    stale = Signature("PeterNeumann", 0xC74F20A3, "BADSIGN=")
    assert note.sign(TEXT, [signer], existing=[stale]) == want


def test_sign_refuses_bad_input() -> None:
    signer = Ed25519Signer.from_skey(PETER_SKEY)
    with pytest.raises(MalformedError):
        note.sign("abc", [signer])
    with pytest.raises(MalformedError):
        note.sign(TEXT, [], existing=[Signature("a+b", 0, "ABCD")])
    with pytest.raises(MalformedError):
        note.sign(TEXT, [], existing=[Signature("PeterNeumann", 0xC74F20A3, "BADHASH=")])


def test_generated_keys_are_self_consistent() -> None:
    s = Ed25519Signer.generate("EnochRoot")
    v = Ed25519Verifier.from_vkey(s.vkey)
    assert Ed25519Signer.from_skey(s.skey).vkey == s.vkey
    assert (v.name, v.key_id) == (s.name, s.key_id)
    sig = s.sign(b"hi")
    assert v.verify(b"hi", sig)
    assert not v.verify(b"hj", sig)
    assert not v.verify(b"hi", bytes([sig[0] ^ 1]) + sig[1:])
    assert "PRIVATE" not in repr(s)


def test_open_one_verified_one_unknown() -> None:
    peter = Ed25519Verifier.from_vkey(PETER_VKEY)
    enoch = Ed25519Verifier.from_vkey(ENOCH_VKEY)
    msg = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    n = note.open(msg, [peter])
    assert n.text == TEXT
    assert n.sigs == (PETER,)
    assert n.unverified_sigs == (ENOCH,)
    n = note.open(msg, [peter, enoch])
    assert n.sigs == (PETER, ENOCH)
    assert n.unverified_sigs == ()
    assert n.to_bytes() == msg


def test_open_without_trusted_signature_is_rejected_but_keeps_the_note() -> None:
    msg = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    with pytest.raises(UnverifiedNoteError) as err:
        note.open(msg, [])
    assert str(err.value).startswith("note has no verifiable signatures")
    assert err.value.note.sigs == ()
    assert err.value.note.unverified_sigs == (PETER, ENOCH)


def test_open_duplicated_verifier_is_ambiguous_only_when_used() -> None:
    peter = Ed25519Verifier.from_vkey(PETER_VKEY)
    enoch = Ed25519Verifier.from_vkey(ENOCH_VKEY)
    with pytest.raises(VerificationError, match="ambiguous key EnochRoot\\+af0cfe78"):
        note.open((TEXT + "\n" + ENOCH_SIG).encode(), [enoch, peter, enoch])
    note.open((TEXT + "\n" + PETER_SIG).encode(), [enoch, peter, enoch])


def test_open_limits_signature_count() -> None:
    peter = Ed25519Verifier.from_vkey(PETER_VKEY)
    with pytest.raises(MalformedError):
        note.open((TEXT + "\n" + PETER_SIG * 101).encode(), [peter])
    with pytest.raises(MalformedError):
        note.open((TEXT + "\n" + PETER_SIG * 101).encode(), [])
    # The spec requires accepting at least 16.
    assert note.open((TEXT + "\n" + PETER_SIG * 16).encode(), [peter]).sigs == (PETER,)


def test_open_invalid_signature_from_known_key_rejects_the_note() -> None:
    peter = Ed25519Verifier.from_vkey(PETER_VKEY)
    p = PETER_SIG.encode()
    msg = (TEXT + "\n").encode() + p[:60] + b"ABCD" + p[60:]
    with pytest.raises(
        InvalidSignatureError, match="invalid signature for key PeterNeumann\\+c74f20a3"
    ):
        note.open(msg, [peter])
    tampered = (TEXT.replace("answer", "Answer") + "\n" + PETER_SIG).encode()
    with pytest.raises(InvalidSignatureError):
        note.open(tampered, [peter])


def test_open_drops_duplicates() -> None:
    peter = Ed25519Verifier.from_vkey(PETER_VKEY)
    # Go slices bytes: byte 60 of the line (the em dash is 3 bytes in UTF-8).
    enoch_abcd = Signature(
        "EnochRoot",
        0xAF0CFE78,
        "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n"
        + "ABCD"
        + "2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=",
    )
    e = ENOCH_SIG.encode()
    msg = (
        (TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG).encode()
        + e[:60]
        + b"ABCD"
        + e[60:]
    )
    n = note.open(msg, [peter])
    assert n.sigs == (PETER,)
    assert n.unverified_sigs == (ENOCH, enoch_abcd)


@pytest.mark.parametrize(
    "msg",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "— Bad Name " + PETER_B64,
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + "- PeterNeumann " + PETER_B64 + "\n",
        TEXT + "\n" + "— PeterNeumann AAAA\n",
        TEXT + "\n" + "— PeterNeumann \n",
        TEXT + "\n" + "— PeterNeumann " + PETER_B64[:-1] + "\n",
    ],
)
def test_open_malformed(msg: str) -> None:
    with pytest.raises(MalformedError):
        note.open(msg.encode(), [Ed25519Verifier.from_vkey(PETER_VKEY)])


def test_open_invalid_utf8() -> None:
    with pytest.raises(MalformedError):
        note.open(
            b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [Ed25519Verifier.from_vkey(PETER_VKEY)]
        )


def test_unknown_key_sharing_name_or_id_is_not_trusted() -> None:
    # "Verifiers MUST ignore signatures from unknown keys, even if they share a
    # name or ID (but not both) with a known key."
    peter = Ed25519Verifier.from_vkey(PETER_VKEY)
    renamed = (TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego")).encode()
    with pytest.raises(UnverifiedNoteError):
        note.open(renamed, [peter])
    other_id = (TEXT + "\n" + PETER_SIG.replace("x08g", "xxxx")).encode()
    with pytest.raises(UnverifiedNoteError):
        note.open(other_id, [peter])


def test_text_may_contain_blank_lines_and_sign_open_round_trip() -> None:
    s = Ed25519Signer.generate("safeshare.example/audit/0")
    text = "line one\n\nline three\n"
    msg = note.sign(text, [s])
    assert note.open(msg, [s.verifier()]).text == text
    ending_blank = "Note\n\n"
    assert note.open(note.sign(ending_blank, [s]), [s.verifier()]).text == ending_blank


def test_invalid_names_are_refused() -> None:
    for name in ["", "a b", "a+b", "a\u00a0b", "a\u2003b", "a\tb", "a\x01b"]:
        assert not note.is_valid_name(name)
        with pytest.raises(KeyFormatError):
            Ed25519Signer(name=name, seed=b"\x00" * 32)
    assert note.is_valid_name("safeshare.example/audit/0")
