"""The signed, verifiable audit log: one leaf per decision, RFC 6962 tree, C2SP checkpoints.

Modules, each owning one idea (import from them directly):

- :mod:`broker.audit.merkle`      RFC 6962 / RFC 9162 hashing, :class:`MerkleTree`,
  ``verify_inclusion``, ``verify_consistency``.
- :mod:`broker.audit.note`        C2SP signed notes (Ed25519), ``sign`` / ``open``, vkeys.
- :mod:`broker.audit.checkpoint`  C2SP tlog-checkpoint: :class:`Checkpoint`,
  ``sign_checkpoint``, ``open_checkpoint``.
- :mod:`broker.audit.cosignature` C2SP tlog-cosignature (Ed25519 ``cosignature/v1``)
  and the :class:`Witness`.
- :mod:`broker.audit.leaf`        :class:`AuditLeaf` (RFC 8785 canonical bytes),
  ``subject_pseudonym``, batch framing for Kafka messages.
- :mod:`broker.audit.keys`        key files, signed key lists, rotation, :class:`KeyRing`.
- :mod:`broker.audit.log`         :class:`AuditLog`, the operator's in-memory shard.
- :mod:`broker.audit.bundle`      the offline export :class:`Bundle`.
- :mod:`broker.audit.verify`      ``verify_bundle``, ``prove_event``,
  ``verify_event_proof``, ``who_saw``.
- :mod:`broker.audit.exceptions`  the error tree.
"""
