"""Errors of the audit log.

The tree is drawn once, here::

    SafeshareError                         (broker.errors)
    └── AuditError                         anything wrong in broker.audit
        ├── KeyFormatError                 a vkey, private key or key list entry is malformed
        ├── WitnessStateError              a witness cannot read or write its state file
        ├── WitnessConflictError           the proof offered starts from another size than
        │                                  the witness's last seen one (retry with that size)
        └── VerificationError              a signature, proof or log does not verify
            ├── MalformedError             untrusted bytes do not follow their format
            │                              (note, checkpoint, leaf, batch, bundle)
            ├── UnverifiedNoteError        no trusted key signed the note
            ├── InvalidSignatureError      a trusted key's signature on a note is wrong
            ├── StaleCheckpointError       a witness was shown an older checkpoint
            ├── SplitViewError             two checkpoints of one log are inconsistent
            └── BrokenLogError             the audit partition in Kafka holds something that
                                           is not committed audit batches, or no longer
                                           matches a checkpoint already published

Verification functions return a value or raise one of the
:class:`VerificationError` family, with a message a person can act on
("inclusion proof for leaf 41 does not verify: expected root …, calculated …").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.errors import SafeshareError

if TYPE_CHECKING:
    from broker.audit.note import Note


class AuditError(SafeshareError):
    """Base class of every error raised by :mod:`broker.audit`."""


class KeyFormatError(AuditError):
    """A verifier key (vkey), private key or key list entry is malformed."""


class WitnessStateError(AuditError):
    """A witness cannot read or write the file holding its last seen checkpoints."""


class WitnessConflictError(AuditError):
    """A consistency proof was built from a size the witness is not at.

    Not evidence of misbehaviour: the caller's idea of the witness's state is
    out of date (C2SP tlog-witness answers such a request with 409 Conflict).
    Rebuild the proof from :attr:`seen_size` and ask again.
    """

    def __init__(self, message: str, *, origin: str, seen_size: int) -> None:
        super().__init__(message)
        self.origin = origin
        self.seen_size = seen_size


class VerificationError(AuditError):
    """A signature, proof, checkpoint, leaf or bundle does not verify."""


class MalformedError(VerificationError):
    """Bytes that claim to be in one of our formats do not follow it.

    Raised for untrusted input only: a note, checkpoint, leaf, batch or bundle.
    """


class UnverifiedNoteError(VerificationError):
    """The note parsed, but no signature on it is from a trusted key.

    C2SP signed-note §Signatures: "If no signature from a known key verifies
    successfully, clients MUST reject the note." The parsed (untrusted) note is
    kept on :attr:`note` for diagnostics only.
    """

    def __init__(self, message: str, note: Note) -> None:
        super().__init__(message)
        self.note = note


class InvalidSignatureError(VerificationError):
    """A signature line names a trusted key, but the signature is wrong."""

    def __init__(self, message: str, *, name: str, key_id: int) -> None:
        super().__init__(message)
        self.name = name
        self.key_id = key_id


class StaleCheckpointError(VerificationError):
    """A witness was asked to cosign a checkpoint smaller than one it has seen.

    Not proof of misbehaviour by itself (two checkpointers may race), but the
    witness never moves backwards.
    """

    def __init__(self, message: str, *, origin: str, seen_size: int, offered_size: int) -> None:
        super().__init__(message)
        self.origin = origin
        self.seen_size = seen_size
        self.offered_size = offered_size


class SplitViewError(VerificationError):
    """Two checkpoints of one log cannot both be true: the log forked its history.

    Raised when a checkpoint has the same size as an earlier one but a different
    root, or when the consistency proof between them fails. Both views are kept
    so they can be published as evidence.
    """

    def __init__(
        self,
        message: str,
        *,
        origin: str,
        size1: int,
        root1: bytes,
        size2: int,
        root2: bytes,
    ) -> None:
        super().__init__(message)
        self.origin = origin
        self.size1 = size1
        self.root1 = root1
        self.size2 = size2
        self.root2 = root2


class BrokenLogError(VerificationError):
    """The audit log *as stored in Kafka* is broken; nothing more may be signed.

    Raised by the checkpointer (and the Kafka witness) when a committed record
    of the audit partition is not an audit batch or holds a malformed leaf,
    or when replaying the partition no longer gives the root of a checkpoint
    already published. Every leaf is part of the tree, so a record that cannot
    be read cannot be skipped: the log stops being checkpointed until a person
    looks. :attr:`where` is ``topic[partition]@offset``.
    """

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where
