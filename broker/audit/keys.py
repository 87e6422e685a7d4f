"""Log signing keys: files, signed key lists, rotation with overlap, and a key ring.

A *key list* is a C2SP signed note whose text is::

    safeshare-audit-keylist/v1
    <origin>
    <version: 1, 2, 3, ... no leading zeros>
    key <vkey> <not_before_ms> <not_after_ms or ->
    key <vkey> <not_before_ms> <not_after_ms or ->
    ...

Every listed vkey is an Ed25519 (0x01) note key named after the origin, so a
checkpoint signature names the key by (origin, key ID). Version 1 is signed by
the log's first key, which auditors get out of band (their trust anchor).
Version ``n + 1`` must be signed by a key of version ``n``; :func:`rotate` also
has the new key sign it (proof of possession) and emits a ``KEY_ROTATION``
audit leaf carrying the SHA-256 of the signed key list, so the rotation itself
is in the tree.

Old public keys are never dropped: a retired key keeps its window and still
verifies the checkpoints it signed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.audit import note as _note
from broker.audit.exceptions import AuditError, KeyFormatError, MalformedError, VerificationError
from broker.audit.leaf import AuditLeaf, LeafKind
from broker.audit.note import Ed25519Signer, Ed25519Verifier

__all__ = [
    "KeyEntry",
    "KeyList",
    "KeyRing",
    "initial_key_list",
    "read_private_key",
    "read_vkeys",
    "rotate",
    "write_private_key",
    "write_vkeys",
]

_HEADER = "safeshare-audit-keylist/v1"
_NUM_RE = re.compile(r"^(?:0|[1-9][0-9]*)\Z")


def _num(s: str, what: str) -> int:
    if not _NUM_RE.match(s):
        raise MalformedError(f"malformed key list: {what} {s[:30]!r} is not a decimal number")
    return int(s)


@dataclass(frozen=True)
class KeyEntry:
    """One log key and the time window (UTC ms, inclusive) in which it may sign."""

    vkey: str
    not_before_ms: int
    not_after_ms: int | None = None

    def __post_init__(self) -> None:
        if self.not_after_ms is not None and self.not_after_ms < self.not_before_ms:
            raise MalformedError(f"key {self.vkey}: not_after is before not_before")

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier.from_vkey(self.vkey)

    def valid_at(self, time_ms: int) -> bool:
        return self.not_before_ms <= time_ms and (
            self.not_after_ms is None or time_ms <= self.not_after_ms
        )


@dataclass(frozen=True)
class KeyList:
    """The log's keys at one version."""

    origin: str
    version: int
    keys: tuple[KeyEntry, ...]

    def __post_init__(self) -> None:
        if not _note.is_valid_name(self.origin):
            raise MalformedError(f"malformed key list: origin {self.origin!r}")
        if self.version < 1:
            raise MalformedError("malformed key list: versions start at 1")
        if not self.keys:
            raise MalformedError("malformed key list: it lists no keys")
        seen: set[int] = set()
        for entry in self.keys:
            try:
                v = entry.verifier()
            except KeyFormatError as exc:
                raise MalformedError(f"malformed key list: {exc}") from exc
            if v.name != self.origin:
                raise MalformedError(
                    f"malformed key list: key {entry.vkey} is not named after "
                    f"the origin {self.origin}"
                )
            if v.key_id in seen:
                raise MalformedError(f"malformed key list: key {entry.vkey} is listed twice")
            seen.add(v.key_id)

    def text(self) -> str:
        lines = [_HEADER, self.origin, str(self.version)]
        for k in self.keys:
            after = "-" if k.not_after_ms is None else str(k.not_after_ms)
            lines.append(f"key {k.vkey} {k.not_before_ms} {after}")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> KeyList:
        if not text.endswith("\n"):
            raise MalformedError("malformed key list: no final newline")
        lines = text[:-1].split("\n")
        if len(lines) < 4 or lines[0] != _HEADER:
            raise MalformedError(
                f"malformed key list: it must start with {_HEADER!r} and list keys"
            )
        origin, version = lines[1], _num(lines[2], "version")
        entries = []
        for line in lines[3:]:
            parts = line.split(" ")
            if len(parts) != 4 or parts[0] != "key":
                raise MalformedError(f"malformed key list: line {line[:60]!r}")
            after = None if parts[3] == "-" else _num(parts[3], "not_after")
            entries.append(KeyEntry(parts[1], _num(parts[2], "not_before"), after))
        return cls(origin, version, tuple(entries))

    def sign(self, signers: Sequence[Ed25519Signer]) -> bytes:
        return _note.sign(self.text(), signers)


def initial_key_list(signer: Ed25519Signer, *, now_ms: int) -> tuple[KeyList, bytes]:
    """Version 1 of a log's key list: the log's first key, signed by itself."""
    kl = KeyList(signer.name, 1, (KeyEntry(signer.vkey, now_ms, None),))
    return kl, kl.sign([signer])


def rotate(
    current: KeyList,
    *,
    old_signer: Ed25519Signer,
    new_signer: Ed25519Signer,
    now_ms: int,
    overlap_ms: int,
    source_agency: str = "safeshare",
) -> tuple[KeyList, bytes, AuditLeaf]:
    """Introduce ``new_signer`` and retire ``old_signer`` after ``overlap_ms``.

    Returns the new key list, its signed note (signed by the old and the new
    key) and the ``KEY_ROTATION`` leaf to append to the log (it must be
    committed in the log before any checkpoint signed by the new key alone).
    Retired keys stay listed with their closed window.
    """
    if new_signer.name != current.origin or old_signer.name != current.origin:
        raise AuditError(f"log keys of {current.origin} must be named {current.origin!r}")
    if old_signer.vkey not in {k.vkey for k in current.keys}:
        raise AuditError("the old key is not in the current key list")
    if new_signer.vkey in {k.vkey for k in current.keys}:
        raise AuditError("the new key is already in the key list")
    retire_at = now_ms + overlap_ms
    entries = [
        KeyEntry(k.vkey, k.not_before_ms, retire_at)
        if k.vkey == old_signer.vkey and (k.not_after_ms is None or k.not_after_ms > retire_at)
        else k
        for k in current.keys
    ]
    entries.append(KeyEntry(new_signer.vkey, now_ms, None))
    new = KeyList(current.origin, current.version + 1, tuple(entries))
    signed = new.sign([old_signer, new_signer])
    leaf = AuditLeaf(
        time_ms=now_ms,
        kind=LeafKind.KEY_ROTATION,
        event_id=f"keylist/{current.origin}/{new.version}",
        event_digest=hashlib.sha256(signed).hexdigest(),
        source_agency=source_agency,
        outcome="ROTATED",
        reason=(
            f"new key {new_signer.key_id:08x}; key {old_signer.key_id:08x} retires at {retire_at}"
        ),
    )
    return new, signed, leaf


class KeyRing:
    """Every log key an auditor trusts, old and new, with its signing window.

    Built from trust anchors (vkeys got out of band) and then signed key lists,
    each accepted only if a key already in the ring signed it and its version
    follows the last one accepted.
    """

    def __init__(self, anchors: Iterable[str | Ed25519Verifier]) -> None:
        self._keys: dict[tuple[str, int], tuple[Ed25519Verifier, KeyEntry | None]] = {}
        for a in anchors:
            v = a if isinstance(a, Ed25519Verifier) else Ed25519Verifier.from_vkey(a)
            self._keys[(v.name, v.key_id)] = (v, None)
        if not self._keys:
            raise AuditError("a key ring needs at least one trusted key")
        self._versions: dict[str, int] = {}
        self._current: dict[str, KeyList] = {}

    def verifiers(self, *, origin: str | None = None) -> list[Ed25519Verifier]:
        """All known keys (optionally of one log), retired ones included."""
        return [v for (name, _), (v, _) in self._keys.items() if origin is None or name == origin]

    def find(self, name: str, key_id: int) -> Ed25519Verifier | None:
        found = self._keys.get((name, key_id))
        return found[0] if found else None

    def window(self, name: str, key_id: int) -> KeyEntry | None:
        """The signing window of a key from the latest key list, or None for anchors/unknown."""
        found = self._keys.get((name, key_id))
        return found[1] if found else None

    def version(self, origin: str) -> int:
        """The last key list version accepted for ``origin`` (0: none)."""
        return self._versions.get(origin, 0)

    def add_key_list(self, signed: bytes) -> KeyList:
        """Verify and apply a signed key list. Raises :class:`VerificationError`."""
        text, _ = _note.parse(signed)
        kl = KeyList.parse(text)
        last = self._versions.get(kl.origin, 0)
        if last and kl.version != last + 1:
            raise VerificationError(
                f"key list of {kl.origin} has version {kl.version}; expected {last + 1}"
            )
        # Signed by a key already trusted for this log and not being retired:
        # the first list by an anchor, later ones by a key the previous list
        # left open-ended. A retired key cannot introduce new keys.
        current = self._current.get(kl.origin)
        if current is None:
            signers = [
                v for (name, _), (v, e) in self._keys.items() if name == kl.origin and e is None
            ]
        else:
            signers = [e.verifier() for e in current.keys if e.not_after_ms is None]
        try:
            _note.open(signed, signers)
        except VerificationError as exc:
            raise VerificationError(
                f"key list version {kl.version} of {kl.origin} is not signed by a current key "
                f"of version {last or 'the trust anchors'}: {exc}"
            ) from exc
        for entry in kl.keys:
            v = entry.verifier()
            self._keys[(v.name, v.key_id)] = (v, entry)
        self._versions[kl.origin] = kl.version
        self._current[kl.origin] = kl
        return kl


# -- files ------------------------------------------------------------------------------


def write_private_key(path: str | os.PathLike[str], skey: str, *, overwrite: bool = False) -> None:
    """Write a private key text to ``path`` with mode 0600 (never world/group readable)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise AuditError(f"refusing to overwrite the private key at {path}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (skey + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private_key(path: str | os.PathLike[str]) -> str:
    """Read a private key text; refuse a file others can read (like ssh does)."""
    p = Path(path)
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise AuditError(
            f"private key {p} has mode {mode:04o}: readable by others; run chmod 600 {p}"
        )
    text = p.read_text(encoding="ascii").strip()
    if not text.startswith("PRIVATE+KEY+"):
        raise KeyFormatError(f"{p} does not hold a PRIVATE+KEY+... private key")
    return text


def write_vkeys(path: str | os.PathLike[str], vkeys: Iterable[str]) -> None:
    """Write verifier keys, one per line."""
    Path(path).write_text("".join(v + "\n" for v in vkeys), encoding="utf-8")


def read_vkeys(path: str | os.PathLike[str]) -> list[str]:
    """Read verifier keys, one per line; blank lines and ``#`` comments are skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            _note.parse_vkey(line)
            out.append(line)
    return out
