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
- :mod:`broker.audit.leaf_template` the router's path to the same leaf bytes:
  ``LeafTemplate``, ``LeafEvent``, ``CanonicalLeaf``, ``leaf_bytes``.
- :mod:`broker.audit.keys`        key files, signed key lists, rotation, :class:`KeyRing`.
- :mod:`broker.audit.log`         :class:`AuditLog`, an in-memory shard (tests, golden data).
- :mod:`broker.audit.bundle`      the offline export :class:`Bundle`.
- :mod:`broker.audit.verify`      ``verify_bundle``, ``prove_event``, ``prove_leaves``,
  ``verify_event_proof``, ``who_saw``.
- :mod:`broker.audit.exceptions`  the error tree.

On Kafka:

- :mod:`broker.audit.stream`      the record layout of the audit partition and the
  checkpoints topic; replaying a partition (:class:`LeafReader`); ``read_log``
  (Kafka to :class:`Bundle`).
- :mod:`broker.audit.checkpointer` :class:`Checkpointer`: replays a shard, assigns
  indices by position, signs and publishes checkpoints and key lists.
- :mod:`broker.audit.keystore`    the shard's signing key files and rotation steps.
- :mod:`broker.audit.witness_service` :class:`KafkaWitness`: recomputes roots and
  consistency proofs from the partition itself and cosigns.

The command line is ``safeshare audit`` (:mod:`broker.cli.audit`).
"""
