"""C2SP tlog-cosignature (c2sp.org/tlog-cosignature): Ed25519 ``cosignature/v1``, and a witness.

A cosignature is a note signature line on a checkpoint::

    — <cosigner name> base64(key ID || timestamp || Ed25519 signature)

- key ID = ``SHA-256(name || "\\n" || 0x04 || 32-byte public key)[:4]``
  (tlog-cosignature §Format; signature type 0x04 in signed-note);
- ``timestamp`` is a big-endian u64 POSIX time in seconds, at most 2**63 - 1;
- the Ed25519 signature is over the message (§Ed25519 signed message)::

      cosignature/v1
      time <timestamp, ASCII decimal, no leading zeros>
      <the whole checkpoint note text, final newline included>

A v1 cosignature states that, as of ``timestamp``, this is the largest tree the
cosigner has seen for the log and that it is consistent with everything the
cosigner saw before. :class:`Witness` makes that statement true: it verifies
the log's signature and a consistency proof from its last seen checkpoint, and
records the new checkpoint before it returns the cosignature.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit import note as _note
from broker.audit.checkpoint import Checkpoint, open_checkpoint
from broker.audit.exceptions import (
    KeyFormatError,
    MalformedError,
    SplitViewError,
    StaleCheckpointError,
    UnverifiedNoteError,
    VerificationError,
    WitnessConflictError,
    WitnessStateError,
)
from broker.audit.merkle import EMPTY_ROOT, verify_consistency
from broker.audit.note import Note, NoteVerifier, Signature
from broker.clock import Clock

__all__ = [
    "ALG_COSIGNATURE_V1",
    "CosignatureSigner",
    "CosignatureVerifier",
    "Witness",
    "add_cosignatures",
    "cosignature_message",
    "cosignature_timestamp",
    "verify_cosignatures",
]

#: signed-note signature type of timestamped Ed25519 witness cosignatures.
ALG_COSIGNATURE_V1 = 0x04
_MAX_TIMESTAMP = 2**63 - 1


def cosignature_message(timestamp: int, checkpoint_text: str) -> bytes:
    """The message an Ed25519 cosigner signs (tlog-cosignature §Ed25519 signed message)."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise MalformedError(f"cosignature timestamp {timestamp} is outside 0..2**63-1")
    if not checkpoint_text.endswith("\n") or checkpoint_text.count("\n") < 3:
        raise MalformedError("a cosigned checkpoint has at least three newline-terminated lines")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


class CosignatureVerifier(_note.Ed25519VerifierBase):
    """Verifies Ed25519 ``cosignature/v1`` signatures of one cosigner (type 0x04).

    Name, key and verifier key text are those of any Ed25519 note key (the base
    class); only the type byte and the signed message differ.
    """

    __slots__ = ()

    SIG_TYPE = ALG_COSIGNATURE_V1
    KIND = "Ed25519 cosigner (0x04)"
    ROLE = "cosigner"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """``sig`` is ``timestamp (8 bytes) || Ed25519 signature (64 bytes)``."""
        if len(sig) != 8 + 64:
            return False
        timestamp = int.from_bytes(sig[:8], "big")
        try:
            signed = cosignature_message(timestamp, msg.decode("utf-8"))
            self._key.verify(sig[8:], signed)
        except (InvalidSignature, MalformedError, UnicodeDecodeError):
            return False
        return True


class CosignatureSigner:
    """Produces Ed25519 ``cosignature/v1`` signatures, timestamped by ``clock``."""

    __slots__ = ("_clock", "_key", "_seed", "_verifier")

    def __init__(self, *, name: str, seed: bytes, clock: Clock) -> None:
        if len(seed) != 32:
            raise KeyFormatError(f"an Ed25519 private key seed has 32 bytes, not {len(seed)}")
        self._seed = bytes(seed)
        self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self._verifier = CosignatureVerifier(
            name=name, public_key=self._key.public_key().public_bytes_raw()
        )
        self._clock = clock

    @classmethod
    def generate(cls, name: str, *, clock: Clock) -> CosignatureSigner:
        return cls(name=name, seed=Ed25519PrivateKey.generate().private_bytes_raw(), clock=clock)

    @classmethod
    def from_skey(cls, skey: str, *, clock: Clock) -> CosignatureSigner:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>``."""
        return _note.signer_from_skey(
            skey, CosignatureVerifier, lambda name, seed: cls(name=name, seed=seed, clock=clock)
        )

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def vkey(self) -> str:
        return self._verifier.vkey

    @property
    def skey(self) -> str:
        """Private key text. Secret: never log it."""
        material = _note.b64encode(bytes([ALG_COSIGNATURE_V1]) + self._seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{material}"

    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def sign(self, msg: bytes) -> bytes:
        """Cosign checkpoint text ``msg`` now: ``timestamp || signature``."""
        return self.sign_at(msg, self._clock.now_ms() // 1000)

    def sign_at(self, msg: bytes, timestamp: int) -> bytes:
        signed = cosignature_message(timestamp, msg.decode("utf-8"))
        return timestamp.to_bytes(8, "big") + self._key.sign(signed)

    def __repr__(self) -> str:
        return f"CosignatureSigner(vkey={self.vkey!r})"


def cosignature_timestamp(sig: Signature) -> int:
    """The POSIX timestamp inside a cosignature line's signature."""
    try:
        raw = _note.b64decode_strict(sig.base64)
    except ValueError as exc:
        raise MalformedError(f"cosignature by {sig.name} is not base64") from exc
    if len(raw) != 4 + 8 + 64:
        raise MalformedError(f"signature by {sig.name} is not an Ed25519 cosignature/v1")
    return int.from_bytes(raw[4:12], "big")


def add_cosignatures(checkpoint_note: bytes, lines: Iterable[str]) -> bytes:
    """Append cosignature lines to a signed checkpoint note (duplicates dropped)."""
    existing = checkpoint_note.decode("utf-8")
    if not existing.endswith("\n"):
        raise MalformedError("malformed note: no final newline")
    out = existing
    for line in lines:
        if not line.startswith("— ") or not line.endswith("\n") or line.count("\n") != 1:
            raise MalformedError(f"not a signature line: {line[:60]!r}")
        if line not in out:
            out += line
    return out.encode("utf-8")


def verify_cosignatures(
    checkpoint_note: bytes, witnesses: Iterable[CosignatureVerifier]
) -> dict[str, int]:
    """Verify the cosignatures on a checkpoint; return ``{witness name: timestamp}``.

    Only signatures by the given witnesses count; an invalid one from a trusted
    witness raises. The log's own signature is not checked here (it is an
    unknown key to this call): use :func:`~broker.audit.checkpoint.open_checkpoint`.
    """
    ws = list(witnesses)
    if not ws:
        return {}
    try:
        n = _note.open(checkpoint_note, ws)
    except UnverifiedNoteError:
        return {}
    return {s.name: cosignature_timestamp(s) for s in n.sigs}


@dataclass(frozen=True)
class _Seen:
    size: int
    root_hash: bytes
    note: str


class Witness:
    """A cosigner that never signs two inconsistent views of a log.

    State (the last checkpoint cosigned per origin) lives in a JSON file at
    ``state_path``, rewritten atomically before a cosignature is handed out, so a
    crash can never leave a cosignature the state does not account for. One
    process per state file.
    """

    _FORMAT = "safeshare-witness-state/v1"

    def __init__(self, *, signer: CosignatureSigner, state_path: str | os.PathLike[str]) -> None:
        self._signer = signer
        self._path = Path(state_path)
        self._seen = self._load()

    @property
    def name(self) -> str:
        return self._signer.name

    @property
    def vkey(self) -> str:
        return self._signer.vkey

    def last_seen(self, origin: str) -> Checkpoint | None:
        """The last checkpoint this witness cosigned for ``origin``."""
        seen = self._seen.get(origin)
        if seen is None:
            return None
        return Checkpoint.parse(_note.parse(seen.note.encode("utf-8"))[0])

    def cosign(
        self,
        checkpoint_note: bytes,
        consistency_proof: Sequence[bytes],
        log_verifier: NoteVerifier | Iterable[NoteVerifier],
        *,
        old_size: int | None = None,
    ) -> str:
        """Check ``checkpoint_note`` against what this witness has seen; cosign it.

        1. The log's signature must verify with ``log_verifier`` (one key, or
           several during a key rotation overlap).
        2. The size must not go backwards (:class:`StaleCheckpointError`).
        3. The same size must have the same root, and a larger size must come
           with a consistency proof from the last seen checkpoint; otherwise
           :class:`SplitViewError` carrying both roots.
        4. Record the checkpoint, then return the cosignature line
           ``— <witness name> <base64>\\n``.

        ``old_size`` is the size the proof starts from. When given and not the
        witness's last seen size, :class:`WitnessConflictError` tells the caller
        which size to prove from (nothing is wrong with the log). When omitted,
        the proof is taken to start from the witness's last seen size.

        A log seen for the first time is trusted on first use: the proof is
        checked from the empty tree.
        """
        verifiers: list[NoteVerifier] = (
            [log_verifier] if isinstance(log_verifier, NoteVerifier) else list(log_verifier)
        )
        cp, n = open_checkpoint(checkpoint_note, verifiers)
        prev = self._seen.get(cp.origin) or _Seen(0, EMPTY_ROOT, "")
        if old_size is not None and old_size != prev.size and cp.size >= prev.size:
            raise WitnessConflictError(
                f"the consistency proof for {cp.origin} starts at size {old_size}, but this "
                f"witness last cosigned size {prev.size}: prove from size {prev.size}",
                origin=cp.origin,
                seen_size=prev.size,
            )
        if cp.size < prev.size:
            raise StaleCheckpointError(
                f"checkpoint of {cp.origin} at size {cp.size} is older than the size {prev.size} "
                "this witness already cosigned; not cosigning",
                origin=cp.origin,
                seen_size=prev.size,
                offered_size=cp.size,
            )
        if cp.size == prev.size and cp.root_hash != prev.root_hash and prev.note:
            raise SplitViewError(
                f"SPLIT VIEW of log {cp.origin}: two checkpoints of size {cp.size} with different "
                f"roots: seen {prev.root_hash.hex()}, offered {cp.root_hash.hex()}",
                origin=cp.origin,
                size1=prev.size,
                root1=prev.root_hash,
                size2=cp.size,
                root2=cp.root_hash,
            )
        try:
            verify_consistency(
                prev.size, cp.size, list(consistency_proof), prev.root_hash, cp.root_hash
            )
        except VerificationError as exc:
            raise SplitViewError(
                f"SPLIT VIEW of log {cp.origin}: checkpoint at size {cp.size} (root "
                f"{cp.root_hash.hex()}) is not proven consistent with the checkpoint at size "
                f"{prev.size} (root {prev.root_hash.hex()}) this witness cosigned: {exc}",
                origin=cp.origin,
                size1=prev.size,
                root1=prev.root_hash,
                size2=cp.size,
                root2=cp.root_hash,
            ) from exc
        sig = self._signer.sign(n.text.encode("utf-8"))
        line = Signature(
            self._signer.name,
            self._signer.key_id,
            _note.b64encode(self._signer.key_id.to_bytes(4, "big") + sig),
        ).line()
        log_only = Note(n.text, tuple(s for s in n.sigs if s.name == cp.origin))
        updated = dict(self._seen)
        updated[cp.origin] = _Seen(cp.size, cp.root_hash, log_only.to_bytes().decode("utf-8"))
        self._save(updated)  # persist first: no cosignature leaves unrecorded
        self._seen = updated
        return line

    # -- state file ------------------------------------------------------------

    def _load(self) -> dict[str, _Seen]:
        if not self._path.exists():
            return {}
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
            if doc.get("format") != self._FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {self._FORMAT!r}")
            return {
                origin: _Seen(
                    int(entry["size"]),
                    _note.b64decode_strict(entry["root_hash"], canonical=True),
                    str(entry["checkpoint"]),
                )
                for origin, entry in doc["logs"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WitnessStateError(
                f"cannot read witness state {self._path}: {exc}; refusing to cosign "
                "without knowing what was cosigned before"
            ) from exc

    def _save(self, seen: dict[str, _Seen]) -> None:
        doc = {
            "format": self._FORMAT,
            "logs": {
                origin: {
                    "size": s.size,
                    "root_hash": _note.b64encode(s.root_hash),
                    "checkpoint": s.note,
                }
                for origin, s in sorted(seen.items())
            },
        }
        data = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        directory = self._path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".witness-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise WitnessStateError(f"cannot write witness state {self._path}: {exc}") from exc
