"""C2SP signed notes (c2sp.org/signed-note), byte-compatible with golang.org/x/mod/sumdb/note.

A signed note is::

    <text, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte big-endian key ID || signature)>
    ...

Keys travel as text:

- verifier key (vkey): ``<name>+<8 hex key ID>+<base64(type byte || public key)>``;
- private key: ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(type byte || private key)>``.

For Ed25519 (signature type 0x01) the key ID is
``SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]`` (signed-note
§Ed25519 signatures) and the private key material is the 32-byte RFC 8032 seed.

:func:`open` applies the rejection rules of signed-note §Format and
§Signatures: malformed notes are rejected; signatures from unknown keys are
kept as unverified, never trusted; a known key's bad signature rejects the
whole note; a note with no verified signature is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self, TypeVar, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.audit.exceptions import (
    InvalidSignatureError,
    KeyFormatError,
    MalformedError,
    UnverifiedNoteError,
    VerificationError,
)

__all__ = [
    "ALG_ED25519",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Ed25519VerifierBase",
    "Note",
    "NoteSigner",
    "NoteVerifier",
    "Signature",
    "is_valid_name",
    "key_id",
    "open",
    "parse_vkey",
    "sign",
    "signer_from_skey",
]

#: Signature type byte of plain Ed25519 note signatures (signed-note §Signature types).
ALG_ED25519 = 0x01

#: Upper bound on signature lines; the spec asks verifiers to accept at least 16.
#: 100 is golang.org/x/mod/sumdb/note's limit.
MAX_SIGNATURES = 100

_SIG_PREFIX = "— "  # U+2014 EM DASH, U+0020 SPACE
_B64_RE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
_HEX8_RE = re.compile(r"^[0-9a-fA-F]{8}$")
# Go's unicode.IsSpace: the White_Space property.
_EXTRA_SPACES = frozenset("\t\n\v\f\r\x85\u2028\u2029")


def b64decode_strict(text: str, *, canonical: bool = False) -> bytes:
    """Standard base64 with padding (RFC 4648 §4); ``ValueError`` otherwise.

    With ``canonical`` the unused bits before the padding must be zero
    (RFC 4648 §3.5), so exactly one text decodes to each byte string.
    """
    if not _B64_RE.match(text):
        raise ValueError("not standard padded base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    if canonical and base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("non-canonical base64 (unused bits set)")
    return raw


def b64encode(raw: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(raw).decode("ascii")


def is_valid_name(name: str) -> bool:
    """A key name is non-empty and has no Unicode spaces, no ``+`` (signed-note §Format).

    Control characters are refused too: a note may not contain them.
    """
    if not name or "+" in name:
        return False
    for ch in name:
        if ch in _EXTRA_SPACES or ord(ch) < 0x20 or ch == "\x7f":
            return False
        if unicodedata.category(ch) == "Zs":
            return False
        if 0xD800 <= ord(ch) <= 0xDFFF:  # lone surrogate: not valid UTF-8
            return False
    return True


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` as a big-endian uint32.

    signed-note §Signatures (recommended key ID derivation; required for
    Ed25519 0x01 and for tlog-cosignature's 0x04).
    """
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def parse_vkey(vkey: str) -> tuple[str, int, int, bytes]:
    """Split a verifier key into ``(name, key_id, sig_type, public key)``.

    Checks the syntax and that the key ID is the SHA-256 derivation over the
    encoded key; does not check the key material's length for its type.
    """
    parts = vkey.split("+", 2)  # base64 may itself contain "+"
    if len(parts) != 3:
        raise KeyFormatError(f"verifier key {vkey!r} is not <name>+<hex key id>+<base64 key>")
    name, hex_id, key64 = parts
    if not is_valid_name(name):
        raise KeyFormatError(f"verifier key {vkey!r} has an invalid key name")
    if not _HEX8_RE.match(hex_id):
        raise KeyFormatError(f"verifier key {vkey!r}: key id must be 8 hex digits")
    try:
        key = b64decode_strict(key64)
    except ValueError as exc:
        raise KeyFormatError(f"verifier key {vkey!r}: key is not base64 ({exc})") from exc
    if len(key) < 2:
        raise KeyFormatError(f"verifier key {vkey!r}: key material is empty")
    kid = int(hex_id, 16)
    if kid != key_id(name, key[0], key[1:]):
        raise KeyFormatError(
            f"verifier key {vkey!r}: key id {hex_id} does not match the key "
            f"(expected {key_id(name, key[0], key[1:]):08x})"
        )
    return name, kid, key[0], key[1:]


@runtime_checkable
class NoteVerifier(Protocol):
    """Verifies signatures by one key, identified by (name, key ID)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True when ``sig`` (without the 4-byte key ID) is valid over ``msg``."""
        ...


@runtime_checkable
class NoteSigner(Protocol):
    """Signs note texts with one key, identified by (name, key ID)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, msg: bytes) -> bytes:
        """The signature bytes over ``msg`` (without the 4-byte key ID)."""
        ...


class Ed25519VerifierBase:
    """An Ed25519 public key as signed notes name it: key name, key ID, verifier key text.

    What differs between Ed25519 signature types is only the type byte, which
    goes into the key ID and the vkey, and the message that is signed; so the
    name and key checks, the vkey parsing and the vkey text live here once, and
    a subclass sets :attr:`SIG_TYPE`, :attr:`KIND` (how errors name the key)
    and ``verify``: :class:`Ed25519Verifier` (type 0x01, the note text) and
    :class:`~broker.audit.cosignature.CosignatureVerifier` (type 0x04, the
    ``cosignature/v1`` message).
    """

    __slots__ = ("_key", "_key_id", "_name", "_public")

    #: Signature type byte (signed-note §Signature types).
    SIG_TYPE: ClassVar[int]
    #: The key type as an error names it, type byte included: "Ed25519 (0x01)".
    KIND: ClassVar[str]
    #: What the key's owner is called in an error about its name.
    ROLE: ClassVar[str] = "key"

    def __init__(self, *, name: str, public_key: bytes) -> None:
        if not is_valid_name(name):
            raise KeyFormatError(f"invalid {self.ROLE} name {name!r}: no spaces or '+' allowed")
        if len(public_key) != 32:
            raise KeyFormatError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
        self._name = name
        self._public = bytes(public_key)
        self._key = Ed25519PublicKey.from_public_bytes(self._public)
        self._key_id = key_id(name, self.SIG_TYPE, self._public)

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        """Parse ``<name>+<hex id>+<base64(type byte || public key)>`` of this key type."""
        name, _kid, alg, key = parse_vkey(vkey)
        if alg != cls.SIG_TYPE:
            raise KeyFormatError(f"verifier key {vkey!r} is of type {alg:#04x}, not {cls.KIND}")
        if len(key) != 32:
            raise KeyFormatError(f"verifier key {vkey!r}: Ed25519 keys have 32 bytes")
        return cls(name=name, public_key=key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte RFC 8032 public key."""
        return self._public

    @property
    def vkey(self) -> str:
        """This key in verifier key text form."""
        material = b64encode(bytes([self.SIG_TYPE]) + self._public)
        return f"{self._name}+{self._key_id:08x}+{material}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class Ed25519Verifier(Ed25519VerifierBase):
    """An Ed25519 (type 0x01) note verifier."""

    __slots__ = ()

    SIG_TYPE = ALG_ED25519
    KIND = "Ed25519 (0x01)"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            self._key.verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519Verifier) and other.vkey == self.vkey

    def __hash__(self) -> int:
        return hash(self.vkey)


class Ed25519Signer:
    """An Ed25519 (type 0x01) note signer."""

    __slots__ = ("_key", "_name", "_seed", "_verifier")

    def __init__(self, *, name: str, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFormatError(f"an Ed25519 private key seed has 32 bytes, not {len(seed)}")
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self._verifier = Ed25519Verifier(
            name=name, public_key=self._key.public_key().public_bytes_raw()
        )
        self._name = name

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        """A fresh key from the operating system's CSPRNG."""
        return cls(name=name, seed=Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_skey(cls, skey: str) -> Ed25519Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``.

        The key ID is checked against the public key derived from the seed.
        """
        return signer_from_skey(skey, Ed25519Verifier, lambda name, seed: cls(name=name, seed=seed))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def skey(self) -> str:
        """This key in private key text form. Secret: never log it."""
        payload = b64encode(bytes([ALG_ED25519]) + self._seed)
        return f"PRIVATE+KEY+{self._name}+{self.key_id:08x}+{payload}"

    @property
    def vkey(self) -> str:
        return self._verifier.vkey

    def verifier(self) -> Ed25519Verifier:
        return self._verifier

    def sign(self, msg: bytes) -> bytes:
        return self._key.sign(msg)

    def __repr__(self) -> str:  # never show the seed
        return f"Ed25519Signer(vkey={self.vkey!r})"


_S = TypeVar("_S", bound=NoteSigner)


def signer_from_skey(
    skey: str, kind: type[Ed25519VerifierBase], make: Callable[[str, bytes], _S]
) -> _S:
    """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(type byte || seed)>`` into ``make(name, seed)``.

    ``kind`` is the verifier class of the key type (its :attr:`~Ed25519VerifierBase.SIG_TYPE`
    must be the type byte). The key ID is checked against the public key of the
    signer ``make`` builds, so a private key whose name or ID was edited is
    refused rather than signing under an ID no verifier will find.
    """
    parts = skey.split("+", 4)  # base64 may itself contain "+"
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise KeyFormatError("private key is not PRIVATE+KEY+<name>+<hex id>+<base64 key>")
    name, hex_id, key64 = parts[2:]
    if not is_valid_name(name) or not _HEX8_RE.match(hex_id):
        raise KeyFormatError("private key has an invalid name or key id")
    try:
        key = b64decode_strict(key64)
    except ValueError as exc:
        raise KeyFormatError(f"private key is not base64 ({exc})") from exc
    if len(key) != 33 or key[0] != kind.SIG_TYPE:
        raise KeyFormatError(f"private key is not an {kind.KIND} 32-byte seed")
    signer = make(name, key[1:])
    if signer.key_id != int(hex_id, 16):
        raise KeyFormatError(f"private key id {hex_id} does not match its public key")
    return signer


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key ID and the base64 text as it appeared."""

    name: str
    key_id: int
    base64: str

    def line(self) -> str:
        """The signature line, ``— <name> <base64>\\n``."""
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"

    def raw(self) -> bytes:
        """The decoded signature without its 4-byte key ID."""
        return b64decode_strict(self.base64)[4:]


@dataclass(frozen=True)
class Note:
    """A note's text and its signatures.

    ``sigs`` were verified by a trusted key; ``unverified_sigs`` are from keys
    the caller did not trust: preserved, never to be relied on.
    """

    text: str
    sigs: tuple[Signature, ...] = ()
    unverified_sigs: tuple[Signature, ...] = field(default=())

    def to_bytes(self) -> bytes:
        """Re-encode: text, blank line, verified then unverified signature lines."""
        lines = "".join(s.line() for s in (*self.sigs, *self.unverified_sigs))
        return (self.text + "\n" + lines).encode("utf-8")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedError("malformed note: the text must end with a newline")
    for ch in text:
        o = ord(ch)
        if (o < 0x20 and ch != "\n") or 0xD800 <= o <= 0xDFFF:
            raise MalformedError(f"malformed note: the text contains control character U+{o:04X}")


def sign(text: str, signers: Sequence[NoteSigner], existing: Sequence[Signature] = ()) -> bytes:
    """Sign ``text`` with every signer and return the encoded note.

    ``existing`` signatures (e.g. from :attr:`Note.sigs` / ``unverified_sigs``)
    are kept first, except those by a key that signs again now; new signatures
    follow in signer order (as golang.org/x/mod/sumdb/note ``Sign``).
    """
    _check_text(text)
    msg = text.encode("utf-8")
    new_lines: list[str] = []
    fresh: set[tuple[str, int]] = set()
    for s in signers:
        if not is_valid_name(s.name):
            raise KeyFormatError(f"invalid signer name {s.name!r}")
        fresh.add((s.name, s.key_id))
        sig = s.sign(msg)
        new_lines.append(
            Signature(s.name, s.key_id, b64encode(s.key_id.to_bytes(4, "big") + sig)).line()
        )
    kept: list[str] = []
    for old in existing:
        if not is_valid_name(old.name):
            raise MalformedError(f"malformed note: invalid key name {old.name!r}")
        if (old.name, old.key_id) in fresh:
            continue
        try:
            raw = b64decode_strict(old.base64)
        except ValueError as exc:
            raise MalformedError(f"malformed note: signature by {old.name} is not base64") from exc
        if len(raw) < 5 or int.from_bytes(raw[:4], "big") != old.key_id:
            raise MalformedError(f"malformed note: signature by {old.name} has the wrong key id")
        kept.append(old.line())
    return (text + "\n" + "".join(kept) + "".join(new_lines)).encode("utf-8")


def _verifier_map(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, int], list[NoteVerifier]]:
    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    return known


def parse(msg: bytes) -> tuple[str, list[tuple[Signature, bytes]]]:
    """Split a note into text and ``(signature, raw signature)`` pairs. No trust implied.

    Raises :class:`MalformedError` per signed-note §Format.
    """
    try:
        s = msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError("malformed note: not valid UTF-8") from exc
    for ch in s:
        if ord(ch) < 0x20 and ch != "\n":
            raise MalformedError(f"malformed note: control character U+{ord(ch):04X}")
    # "the text is separated from the signatures by the last empty line".
    split = s.rfind("\n\n")
    if split < 0:
        raise MalformedError("malformed note: no blank line before the signatures")
    text, block = s[: split + 1], s[split + 2 :]
    if not block or not block.endswith("\n"):
        raise MalformedError("malformed note: no signature lines, or no final newline")
    out: list[tuple[Signature, bytes]] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise MalformedError(f"malformed note: line {line[:40]!r} is not a signature line")
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not is_valid_name(name) or not b64:
            raise MalformedError(f"malformed note: bad signature line {line[:60]!r}")
        try:
            raw = b64decode_strict(b64)
        except ValueError as exc:
            raise MalformedError(f"malformed note: signature by {name} is not base64") from exc
        if len(raw) < 5:
            raise MalformedError(f"malformed note: signature by {name} is too short")
        if len(out) == MAX_SIGNATURES:
            raise MalformedError(f"malformed note: more than {MAX_SIGNATURES} signatures")
        out.append((Signature(name, int.from_bytes(raw[:4], "big"), b64), raw[4:]))
    return text, out


def open(msg: bytes, verifiers: Iterable[NoteVerifier]) -> Note:  # noqa: A001 - the spec's verb
    """Parse a signed note and check its signatures against trusted ``verifiers``.

    signed-note §Signatures: signatures from unknown keys are preserved in
    ``unverified_sigs`` but not trusted; a known key's invalid signature
    rejects the note (:class:`InvalidSignatureError`); a note without any
    verified signature is rejected (:class:`UnverifiedNoteError`). Malformed
    input raises :class:`MalformedError`.
    """
    known = _verifier_map(verifiers)
    text, parsed = parse(msg)
    sigs: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    text_bytes = text.encode("utf-8")
    for sig, raw in parsed:
        ident = (sig.name, sig.key_id)
        candidates = known.get(ident)
        if not candidates:
            line = sig.line()
            if line not in seen_unverified:  # drop repeated identical lines
                seen_unverified.add(line)
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise VerificationError(
                f"ambiguous key {sig.name}+{sig.key_id:08x}: several trusted keys share it"
            )
        if ident in seen:  # one verified signature per key is enough
            continue
        seen.add(ident)
        if not candidates[0].verify(text_bytes, raw):
            raise InvalidSignatureError(
                f"invalid signature for key {sig.name}+{sig.key_id:08x}: the note text "
                "was changed after signing, or the signature is forged",
                name=sig.name,
                key_id=sig.key_id,
            )
        sigs.append(sig)
    note = Note(text, tuple(sigs), tuple(unverified))
    if not sigs:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified) or "none"
        raise UnverifiedNoteError(
            f"note has no verifiable signatures: signed by {names}, none of them trusted", note
        )
    return note
