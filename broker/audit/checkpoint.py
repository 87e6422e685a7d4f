"""C2SP transparency log checkpoints (https://c2sp.org/tlog-checkpoint), signed as notes.

The note text is at least three non-empty, newline-terminated lines::

    safeshare.example/audit/0                       origin
    20852163                                        tree size, ASCII decimal, no leading zeros
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=    base64 RFC 6962 root hash
    <optional non-empty extension lines>

The log signs the text as a C2SP signed note with a key whose name equals the
origin (tlog-checkpoint §Signatures: "The log's key name in its signature line
SHOULD match the origin line"; we require it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker.audit import note as _note
from broker.audit.exceptions import MalformedError, VerificationError
from broker.audit.merkle import HASH_SIZE
from broker.audit.note import Note, NoteSigner, NoteVerifier

__all__ = ["Checkpoint", "open_checkpoint", "origin_for_shard", "sign_checkpoint"]

_SIZE_RE = re.compile(r"^(?:0|[1-9][0-9]*)\Z")
_MAX_SIZE = 2**64 - 1  # sizes are uint64 in every implementation we know of
_ORIGIN_PREFIX = "safeshare.example/audit/"


def origin_for_shard(shard: int | str, *, prefix: str = _ORIGIN_PREFIX) -> str:
    """The origin line (and log key name) of an audit shard, e.g. ``safeshare.example/audit/0``."""
    origin = f"{prefix}{shard}"
    if not _note.is_valid_name(origin):
        raise ValueError(f"origin {origin!r} may not contain spaces or '+'")
    return origin


def _check_line(what: str, line: str) -> None:
    if not line:
        raise MalformedError(f"malformed checkpoint: the {what} line is empty")
    for ch in line:
        o = ord(ch)
        if o < 0x20 or 0xD800 <= o <= 0xDFFF:
            raise MalformedError(
                f"malformed checkpoint: the {what} line has control character U+{o:04X}"
            )


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, tree size and root hash, plus opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 <= self.size <= _MAX_SIZE
        ):
            raise MalformedError(f"malformed checkpoint: tree size {self.size!r} is not a uint64")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedError(
                f"malformed checkpoint: root hash has {len(self.root_hash)} bytes, not {HASH_SIZE}"
            )
        for ext in self.extensions:
            _check_line("extension", ext)

    def text(self) -> str:
        """The note text, newline-terminated (tlog-checkpoint §Note text)."""
        lines = [self.origin, str(self.size), _note.b64encode(self.root_hash), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly; raise :class:`MalformedError`."""
        if not text.endswith("\n"):
            raise MalformedError("malformed checkpoint: the text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedError(
                f"malformed checkpoint: {len(lines)} lines; origin, size and root hash are required"
            )
        origin, size_s, root_s, *ext = lines
        _check_line("origin", origin)
        if not _SIZE_RE.match(size_s) or int(size_s) > _MAX_SIZE:
            raise MalformedError(
                f"malformed checkpoint: tree size {size_s[:30]!r} is not a decimal uint64 "
                "without leading zeros"
            )
        try:
            root = _note.b64decode_strict(root_s, canonical=True)
        except ValueError as exc:
            raise MalformedError(f"malformed checkpoint: root hash is not base64 ({exc})") from exc
        return cls(origin, int(size_s), root, tuple(ext))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> bytes:
    """Sign ``checkpoint`` as a note. The first signer is the log key (name == origin)."""
    if not signers or signers[0].name != checkpoint.origin:
        raise VerificationError(
            f"a checkpoint of {checkpoint.origin!r} must be signed first by the log key "
            f"named after its origin, not {signers[0].name if signers else 'nobody'!r}"
        )
    return _note.sign(checkpoint.text(), signers)


def open_checkpoint(
    msg: bytes, verifiers: Iterable[NoteVerifier], *, origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint with the log's key(s) and parse it.

    Requires a verified signature from a key named like the checkpoint's
    origin, and the origin to be ``origin`` when that is given. Other
    signatures (witness cosignatures, unknown keys) are kept on the note.
    """
    n = _note.open(msg, verifiers)
    cp = Checkpoint.parse(n.text)
    if origin is not None and cp.origin != origin:
        raise VerificationError(f"checkpoint is for log {cp.origin!r}, expected {origin!r}")
    if not any(s.name == cp.origin for s in n.sigs):
        signers = ", ".join(s.name for s in n.sigs)
        raise VerificationError(
            f"checkpoint of {cp.origin!r} is not signed by that log's key "
            f"(verified signatures only from: {signers})"
        )
    return cp, n
