"""The log operator's side of one audit shard, in memory: leaves, checkpoints, keys, export.

Kafka is not involved here: leaves are appended in log order,
:meth:`AuditLog.checkpoint` signs the tree, witnesses' cosignature lines are
attached with :meth:`AuditLog.add_cosignature`, and :meth:`AuditLog.export`
produces the auditor's :class:`~broker.audit.bundle.Bundle`. Tests, the golden
data and benchmarks use it; the Kafka service is
:class:`broker.audit.checkpointer.Checkpointer`.
"""

from __future__ import annotations

from broker.audit.bundle import Bundle, BundleCheckpoint
from broker.audit.checkpoint import Checkpoint, sign_checkpoint
from broker.audit.exceptions import AuditError
from broker.audit.keys import KeyList, initial_key_list, rotate
from broker.audit.leaf import AuditLeaf
from broker.audit.merkle import MerkleTree
from broker.audit.note import Ed25519Signer, Ed25519Verifier
from broker.clock import Clock

__all__ = ["AuditLog"]


class AuditLog:
    """An append-only audit log shard with its signing key."""

    def __init__(self, *, signer: Ed25519Signer, clock: Clock) -> None:
        self.origin = signer.name
        self._signer = signer
        self._clock = clock
        self._tree = MerkleTree()
        self._leaves: list[bytes] = []
        self._checkpoints: list[BundleCheckpoint] = []
        self._signed_size = 0
        self._key_list, first = initial_key_list(signer, now_ms=clock.now_ms())
        self._key_lists: list[bytes] = [first]
        self._vkeys: list[str] = [signer.vkey]

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    @property
    def key_list(self) -> KeyList:
        return self._key_list

    def verifiers(self) -> list[Ed25519Verifier]:
        """The log's public keys, retired ones included (for witnesses and auditors)."""
        return [entry.verifier() for entry in self._key_list.keys]

    def append(self, leaf: AuditLeaf) -> int:
        """Append a leaf at the end; return its index.

        The index is the leaf's position: leaves carry no index of their own
        (see :mod:`broker.audit.leaf`).
        """
        data = leaf.to_bytes()
        self._leaves.append(data)
        return self._tree.append(data)

    def checkpoint(self) -> bytes:
        """Sign a checkpoint of the current tree and keep it for export."""
        cp = Checkpoint(self.origin, self._tree.size, self._tree.root())
        signed = sign_checkpoint(cp, [self._signer])
        self._checkpoints.append(BundleCheckpoint(signed))
        self._signed_size = cp.size
        return signed

    def consistency_proof(self, old_size: int) -> list[bytes]:
        return self._tree.consistency_proof(old_size)

    def add_cosignature(self, checkpoint_note: bytes, line: str) -> None:
        """Attach a witness's cosignature line to a checkpoint this log issued."""
        for i, bc in enumerate(self._checkpoints):
            if bc.note == checkpoint_note:
                if line not in bc.cosignatures:
                    self._checkpoints[i] = BundleCheckpoint(bc.note, (*bc.cosignatures, line))
                return
        raise AuditError("that checkpoint was not issued by this log")

    def rotate_key(self, new_signer: Ed25519Signer, *, overlap_ms: int) -> AuditLeaf:
        """Switch to ``new_signer``; the old key stays valid for ``overlap_ms``.

        Appends the ``KEY_ROTATION`` leaf and returns it.
        """
        now = self._clock.now_ms()
        self._key_list, signed, leaf = rotate(
            self._key_list,
            old_signer=self._signer,
            new_signer=new_signer,
            now_ms=now,
            overlap_ms=overlap_ms,
        )
        self._key_lists.append(signed)
        self._vkeys.append(new_signer.vkey)
        self._signer = new_signer
        self.append(leaf)
        return leaf

    def export(self, *, witness_vkeys: tuple[str, ...] = ()) -> Bundle:
        """Everything an auditor needs, up to the last checkpoint (leaves after it are left out)."""
        size = self._signed_size
        return Bundle.create(
            origin=self.origin,
            leaves=self._leaves[:size],
            checkpoints=self._checkpoints,
            key_lists=self._key_lists,
            log_vkeys=self._vkeys,
            witness_vkeys=witness_vkeys,
        )
