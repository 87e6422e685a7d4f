"""Offline verification of an exported bundle, event inclusion proofs, and who-saw queries.

Nothing here trusts the bundle: only the log keys the auditor passes in
(``trusted_vkeys``, and the key lists they sign) and, optionally, witness keys.
Failures raise :class:`~broker.audit.exceptions.VerificationError` naming the
first bad leaf index, checkpoint or key list and what is wrong with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker._jcs import CanonicalizationError, canonicalize
from broker.audit import note as _note
from broker.audit.bundle import Bundle, BundleCheckpoint
from broker.audit.checkpoint import Checkpoint, open_checkpoint
from broker.audit.cosignature import CosignatureVerifier, add_cosignatures, verify_cosignatures
from broker.audit.exceptions import AuditError, VerificationError
from broker.audit.keys import KeyRing
from broker.audit.leaf import AuditLeaf, LeafKind
from broker.audit.merkle import MerkleTree, hash_leaf, verify_consistency, verify_inclusion

__all__ = [
    "LOCATE_LIMIT",
    "SUBJECT_DECISIONS",
    "SUBJECT_HISTORY",
    "EventProof",
    "linked_subjects",
    "Report",
    "Sighting",
    "prove_event",
    "prove_leaves",
    "verify_bundle",
    "verify_event_proof",
    "who_saw",
]


@dataclass(frozen=True)
class Report:
    """What a successful :func:`verify_bundle` established."""

    origin: str
    tree_size: int
    root_hash: bytes
    checkpoints: int
    key_list_version: int
    signing_keys: tuple[str, ...]  # "name+keyid" of log keys that signed checkpoints
    witnesses: tuple[str, ...]  # witnesses with at least one valid cosignature
    min_cosignatures: int  # fewest trusted cosignatures on any checkpoint
    leaves: tuple[AuditLeaf, ...]

    def summary(self) -> str:
        return (
            f"{self.origin}: {self.tree_size} leaves verified against {self.checkpoints} "
            f"signed checkpoints (root {self.root_hash.hex()}); log keys "
            f"{', '.join(self.signing_keys) or '-'}; key list v{self.key_list_version}; "
            f"witnesses {', '.join(self.witnesses) or '-'} (at least {self.min_cosignatures} "
            "per checkpoint)"
        )


def _ring(trusted: KeyRing | Iterable[str]) -> KeyRing:
    return trusted if isinstance(trusted, KeyRing) else KeyRing(trusted)


def _witnesses(vkeys: Iterable[str]) -> list[CosignatureVerifier]:
    return [CosignatureVerifier.from_vkey(v) for v in vkeys]


#: The widest range of leaves in which :func:`verify_bundle` tests "one leaf
#: inserted" and "two neighbours swapped" against a signed root. Each test
#: costs O(range) hashes, so the search is O(range²): about a second here.
LOCATE_LIMIT = 1024


def _locate(
    tree: MerkleTree,
    lo: int,
    hi: int,
    signed_root: bytes,
    checkpoints: Sequence[BundleCheckpoint],
) -> str:
    """Say where the bundle's leaves first part from the signed log, as precisely as we can.

    Known: the leaves up to ``lo`` give a signed root, those up to ``hi`` do
    not, so the first difference is in ``lo..hi-1``. Without the log's own
    leaves no more can be proven, but two tamperings can be recognised by
    undoing them: if dropping leaf ``k`` (an insertion) or swapping ``k`` and
    ``k+1`` (a reorder) reproduces ``signed_root``, that is what happened.
    (A deletion cannot be undone: the missing leaf's bytes are gone.)
    """
    if hi - lo <= LOCATE_LIMIT:
        hashes = [tree.leaf_hash(i) for i in range(lo, min(hi + 1, tree.size))]
        if tree.size > hi:
            for k in range(lo, hi):
                if tree.root_with_suffix(k, hashes[k + 1 - lo : hi + 1 - lo]) == signed_root:
                    return (
                        f"leaf {k} is not in the signed log: without it, leaves "
                        f"0..{hi - 1} give the signed root (a leaf was inserted at {k})"
                    )
        for k in range(lo, hi - 1):
            i = k - lo
            swapped = [hashes[i + 1], hashes[i], *hashes[i + 2 : hi - lo]]
            if tree.root_with_suffix(k, swapped) == signed_root:
                return (
                    f"leaves {k} and {k + 1} are out of order: swapped back, leaves "
                    f"0..{hi - 1} give the signed root"
                )
    msg = f"the first altered, missing, extra or reordered leaf is at an index in {lo}..{hi - 1}"
    last = 0
    for bc in checkpoints:  # untrusted sizes, used for a hint only
        try:
            last = max(last, Checkpoint.parse(_note.parse(bc.note)[0]).size)
        except (AuditError, UnicodeDecodeError):
            continue
    if last > tree.size:
        msg += (
            f" (the bundle holds {tree.size} leaves but a checkpoint claims {last}: "
            f"{last - tree.size} or more are missing)"
        )
    return msg


def verify_bundle(
    bundle: Bundle,
    trusted_vkeys: KeyRing | Iterable[str],
    *,
    witness_vkeys: Iterable[str] = (),
    witness_quorum: int = 0,
) -> Report:
    """Recompute the log from its leaves and check everything the log signed.

    In order, stopping at the first failure:

    1. key lists: each signed by a current key of the previous version (the
       first by a trusted key);
    2. leaves: canonical bytes (RFC 8785); every key list after the first is
       announced by a ``KEY_ROTATION`` leaf (and vice versa);
    3. checkpoints: the log's signature (C2SP signed-note, key named after the
       origin, key valid at the time of the checkpoint's newest leaf), sizes
       never decreasing, root equal to the root recomputed from the leaves at
       that size (RFC 9162 §2.1.1), consistency with the previous checkpoint
       (RFC 9162 §2.1.4), and at least ``witness_quorum`` valid cosignatures
       from ``witness_vkeys`` (C2SP tlog-cosignature);
    4. every leaf is covered by a checkpoint.

    Leaves carry no index: a leaf's index is its position. A deleted,
    inserted or reordered leaf is caught because the recomputed root no longer
    equals a signed one. The first checkpoint that does not match bounds the
    first bad index from below by the last one that does; inside that range
    the verifier then tests whether removing one leaf or swapping two
    neighbours reproduces the signed root, and names that leaf if so.
    """
    ring = _ring(trusted_vkeys)
    witnesses = _witnesses(witness_vkeys)
    origin = bundle.origin

    # 1. Key lists.
    rotation_digests: dict[str, int] = {}
    for i, kl_bytes in enumerate(bundle.key_lists):
        try:
            kl = ring.add_key_list(kl_bytes)
        except (AuditError, UnicodeDecodeError) as exc:
            raise VerificationError(f"key list {i} does not verify: {exc}") from exc
        if kl.origin != origin:
            raise VerificationError(f"key list {i} is for log {kl.origin}, not {origin}")
        if kl.version > 1:
            rotation_digests[hashlib.sha256(kl_bytes).hexdigest()] = i

    # 2. Leaves, and the tree.
    leaves: list[AuditLeaf] = []
    announced: set[str] = set()
    for i, data in enumerate(bundle.leaves):
        try:
            leaf = AuditLeaf.from_bytes(data)
        except AuditError as exc:
            raise VerificationError(f"leaf {i} is not a valid audit leaf: {exc}") from exc
        if leaf.kind is LeafKind.KEY_ROTATION:
            if leaf.event_digest not in rotation_digests:
                raise VerificationError(
                    f"leaf {i} announces a key rotation (digest {leaf.event_digest}) whose "
                    "signed key list is not in the bundle"
                )
            announced.add(leaf.event_digest)
        leaves.append(leaf)
    unannounced = set(rotation_digests) - announced
    if unannounced:
        first = min(rotation_digests[d] for d in unannounced)
        raise VerificationError(
            f"key list {first} is not announced by any KEY_ROTATION leaf in the log"
        )
    tree = MerkleTree()
    tree.extend(bundle.leaves)

    # 3. Checkpoints.
    if bundle.leaves and not bundle.checkpoints:
        raise VerificationError("the bundle has leaves but no signed checkpoint")
    prev: Checkpoint | None = None
    signing_keys: set[str] = set()
    seen_witnesses: set[str] = set()
    min_cosigs: int | None = None
    for j, bc in enumerate(bundle.checkpoints):
        where = f"checkpoint {j}"
        try:
            cp, n = open_checkpoint(bc.note, ring.verifiers(origin=origin), origin=origin)
        except AuditError as exc:
            raise VerificationError(f"{where} does not verify: {exc}") from exc
        where = f"checkpoint {j} (size {cp.size})"
        if cp.size > len(leaves):
            lo = prev.size if prev is not None else 0
            raise VerificationError(
                f"{where} covers more leaves than the bundle holds ({len(leaves)}): "
                f"{cp.size - len(leaves)} or more leaves are missing; the first missing or "
                f"altered leaf is at an index in {lo}..{len(leaves)}"
            )
        if cp.size:
            newest = leaves[cp.size - 1].time_ms
            in_window = False
            for s in n.sigs:
                window = ring.window(s.name, s.key_id)
                if window is None or window.valid_at(newest):
                    in_window = True
                signing_keys.add(f"{s.name}+{s.key_id:08x}")
            if not in_window:
                raise VerificationError(
                    f"{where} is signed only by keys outside their validity window at "
                    f"{newest} ms (time of leaf {cp.size - 1})"
                )
        recomputed = tree.root(cp.size)
        if recomputed != cp.root_hash:
            lo = prev.size if prev is not None else 0
            raise VerificationError(
                f"{where} does not match the leaves: the log signed root {cp.root_hash.hex()}, "
                f"leaves 0..{cp.size - 1} give {recomputed.hex()}; "
                + _locate(tree, lo, cp.size, cp.root_hash, bundle.checkpoints)
            )
        if prev is not None:
            if cp.size < prev.size:
                raise VerificationError(
                    f"{where} is smaller than checkpoint {j - 1} (size {prev.size}): "
                    "checkpoints must be in increasing size order"
                )
            try:
                verify_consistency(
                    prev.size,
                    cp.size,
                    tree.consistency_proof(prev.size, cp.size),
                    prev.root_hash,
                    cp.root_hash,
                )
            except VerificationError as exc:
                raise VerificationError(
                    f"{where} is not consistent with checkpoint {j - 1}: {exc}"
                ) from exc
        if witnesses:
            try:
                cosigned = add_cosignatures(bc.note, bc.cosignatures)
                got = verify_cosignatures(cosigned, witnesses)
            except AuditError as exc:
                raise VerificationError(
                    f"{where}: a witness cosignature does not verify: {exc}"
                ) from exc
            seen_witnesses.update(got)
            min_cosigs = len(got) if min_cosigs is None else min(min_cosigs, len(got))
            if len(got) < witness_quorum:
                raise VerificationError(
                    f"{where} has {len(got)} valid witness cosignatures; {witness_quorum} required"
                )
        elif witness_quorum > 0:
            raise VerificationError("a witness quorum needs witness keys to check it against")
        prev = cp

    # 4. Coverage.
    covered = prev.size if prev is not None else 0
    if covered < len(leaves):
        raise VerificationError(
            f"leaves {covered}..{len(leaves) - 1} are not covered by any signed checkpoint"
        )
    return Report(
        origin=origin,
        tree_size=covered,
        root_hash=tree.root(covered),
        checkpoints=len(bundle.checkpoints),
        key_list_version=ring.version(origin),
        signing_keys=tuple(sorted(signing_keys)),
        witnesses=tuple(sorted(seen_witnesses)),
        min_cosignatures=min_cosigs or 0,
        leaves=tuple(leaves),
    )


# -- event proofs ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventProof:
    """Everything needed to show, offline, that one leaf is in the signed log.

    RFC 9162 §2.1.3 inclusion proof of ``leaf`` at ``index`` in the tree of
    ``checkpoint`` (a signed note, cosignature lines appended).
    """

    index: int
    leaf: bytes
    hashes: tuple[bytes, ...]
    checkpoint: bytes

    def to_json_value(self) -> dict[str, object]:
        return {
            "index": self.index,
            "leaf": _note.b64encode(self.leaf),
            "hashes": [_note.b64encode(h) for h in self.hashes],
            "checkpoint": self.checkpoint.decode("utf-8"),
        }

    @classmethod
    def from_json_value(cls, doc: dict[str, object]) -> EventProof:
        hashes, index = doc.get("hashes"), doc.get("index")
        if not isinstance(hashes, list) or not isinstance(index, int) or isinstance(index, bool):
            raise VerificationError("malformed event proof: index or hashes missing")
        try:
            return cls(
                index,
                _note.b64decode_strict(str(doc["leaf"]), canonical=True),
                tuple(_note.b64decode_strict(str(h), canonical=True) for h in hashes),
                str(doc["checkpoint"]).encode("utf-8"),
            )
        except (KeyError, ValueError) as exc:
            raise VerificationError(f"malformed event proof: {exc!r}") from exc


def _event_needle(event_id: str) -> bytes:
    """The bytes a canonical leaf about ``event_id`` contains (a cheap pre-filter)."""
    try:
        return b'"event_id":' + canonicalize(event_id)
    except CanonicalizationError:
        return b""


def prove_leaves(bundle: Bundle, indices: Iterable[int]) -> list[EventProof]:
    """Inclusion proofs (RFC 9162 §2.1.3) for the leaves at ``indices``, each
    against the largest checkpoint in the bundle that covers it.

    Trusts nothing and checks nothing: verify the result with
    :func:`verify_event_proof`, which needs only the log's keys.
    """
    tree = MerkleTree()
    tree.extend(bundle.leaves)
    sized = []
    for bc in bundle.checkpoints:
        text, _ = _note.parse(bc.note)
        size = Checkpoint.parse(text).size
        if size <= tree.size:
            sized.append((size, add_cosignatures(bc.note, bc.cosignatures)))
    proofs = []
    for i in indices:
        covering = [(size, note) for size, note in sized if i < size]
        if not covering:
            raise VerificationError(f"leaf {i} is not covered by any checkpoint in the bundle")
        size, note = max(covering, key=lambda c: c[0])
        proofs.append(EventProof(i, bundle.leaves[i], tuple(tree.inclusion_proof(i, size)), note))
    return proofs


def prove_event(bundle: Bundle, event_id: str) -> list[EventProof]:
    """Inclusion proofs for every leaf (decision) about ``event_id``, in log order.

    See :func:`prove_leaves`. Leaves that do not parse are skipped here (this
    function trusts nothing; :func:`verify_bundle` is where they are refused).
    """
    needle = _event_needle(event_id)
    indices = []
    for i, data in enumerate(bundle.leaves):
        if needle and needle not in data:
            continue
        try:
            leaf = AuditLeaf.from_bytes(data)
        except AuditError:
            continue
        if leaf.event_id == event_id:
            indices.append(i)
    return prove_leaves(bundle, indices)


PROOF_FORMAT = "safeshare-audit-proof/v1"


def proof_document(bundle: Bundle, event_id: str) -> dict[str, object] | None:
    """The document ``safeshare audit prove`` prints (and the gateway's receipt
    carries) for every decision about ``event_id``, or None if the checkpointed
    log holds none. ``safeshare audit verify-proof`` checks it offline."""
    proofs = prove_event(bundle, event_id)
    if not proofs:
        return None
    return {
        "format": PROOF_FORMAT,
        "origin": bundle.origin,
        "event_id": event_id,
        "key_lists": [k.decode("utf-8") for k in bundle.key_lists],
        "proofs": [p.to_json_value() for p in proofs],
    }


def verify_event_proof(
    proof: EventProof,
    trusted_vkeys: KeyRing | Iterable[str],
    *,
    witness_vkeys: Iterable[str] = (),
    witness_quorum: int = 0,
) -> AuditLeaf:
    """Check an :class:`EventProof` offline; return the proven leaf."""
    ring = _ring(trusted_vkeys)
    try:
        name = _note.parse(proof.checkpoint)[0].split("\n", 1)[0]
        cp, _ = open_checkpoint(proof.checkpoint, ring.verifiers(origin=name))
    except AuditError as exc:
        raise VerificationError(
            f"the checkpoint of the proof for leaf {proof.index} does not verify: {exc}"
        ) from exc
    verify_inclusion(hash_leaf(proof.leaf), proof.index, cp.size, proof.hashes, cp.root_hash)
    try:
        leaf = AuditLeaf.from_bytes(proof.leaf)
    except AuditError as exc:
        raise VerificationError(f"leaf {proof.index} is not a valid audit leaf: {exc}") from exc
    if witness_quorum:
        got = verify_cosignatures(proof.checkpoint, _witnesses(witness_vkeys))
        if len(got) < witness_quorum:
            raise VerificationError(
                f"the checkpoint for leaf {proof.index} has {len(got)} witness cosignatures; "
                f"{witness_quorum} required"
            )
    return leaf


@dataclass(frozen=True)
class Sighting:
    """One decision about a subject: the leaf and its index in the verified tree.

    For a share on consent, ``relied_on`` is the consent history it rested on:
    the CONSENT leaf that applied the record it cites (``consent_ref``), then the
    leaves of the records that one replaced, newest first; all before the share.
    """

    index: int
    leaf: AuditLeaf
    relied_on: tuple[Sighting, ...] = ()


#: What :func:`who_saw` reports by default: every share and every decision not to share
#: (docs/DESIGN.md: "a record of what was shared, with whom, when, why ... and of
#: decisions not to").
SUBJECT_DECISIONS = frozenset({LeafKind.SHARED, LeafKind.WITHHELD})
#: ... with the consent records applied for the subject, every read of a copy
#: shared about the subject (``safeshare audit who-saw``; DPA 2018 s.62) and the
#: identity decisions about it.
SUBJECT_HISTORY = SUBJECT_DECISIONS | {
    LeafKind.CONSENT, LeafKind.CONSULTED, LeafKind.LINKED, LeafKind.UNLINKED, LeafKind.KEPT_APART,
    LeafKind.REVIEW_RAISED,
}


def who_saw(
    bundle: Bundle,
    subject_pseudonym: str,
    from_ms: int,
    to_ms: int,
    *,
    trusted_vkeys: KeyRing | Iterable[str],
    witness_vkeys: Sequence[str] = (),
    witness_quorum: int = 0,
    kinds: Iterable[LeafKind] = SUBJECT_DECISIONS,
) -> list[Sighting]:
    """Every decision to share or not to share about a subject in ``[from_ms, to_ms)``.

    Verifies the whole bundle first (an answer from an unverified log would be
    worthless), then returns the leaves of ``kinds`` (default: ``SHARED`` and
    ``WITHHELD``) for ``subject_pseudonym`` (the keyed HMAC of
    :func:`broker.audit.leaf.subject_pseudonym`) in log order, with their
    indices for :func:`prove_leaves`: each says who received (or was refused)
    which data classes, when, under which rule and lawful basis; a share on
    consent also the consent history it relied on (:class:`Sighting`). With
    ``kinds=SUBJECT_HISTORY`` the subject's CONSENT leaves are listed as well,
    and the CONSULTED leaves of every copy shared about the subject (a
    consultation names the event and the feed, not the subject: it is the
    subject's when a SHARED leaf of the subject has that event and recipient),
    and the identity decisions about it. A child a person linked is one child:
    the leaves under every pseudonym linked with it count (:func:`linked_subjects`).
    """
    wanted = frozenset(LeafKind(k) for k in kinds)
    report = verify_bundle(
        bundle, trusted_vkeys, witness_vkeys=witness_vkeys, witness_quorum=witness_quorum
    )
    subjects = linked_subjects(report.leaves, subject_pseudonym)
    consents: dict[str, list[Sighting]] = {}  # record id -> its CONSENT leaves, in log order
    out: list[Sighting] = []
    shared = {
        (leaf.event_id, leaf.recipient) for leaf in report.leaves
        if leaf.kind is LeafKind.SHARED and leaf.subject in subjects
    } if LeafKind.CONSULTED in wanted else set()
    for i, leaf in enumerate(report.leaves):
        if leaf.kind is LeafKind.CONSULTED:
            if (leaf.event_id, leaf.recipient) in shared and from_ms <= leaf.time_ms < to_ms:
                out.append(Sighting(i, leaf))
            continue
        if leaf.subject not in subjects:
            continue
        if leaf.kind is LeafKind.CONSENT:
            consents.setdefault(leaf.event_id, []).append(Sighting(i, leaf))
        if leaf.kind not in wanted or not from_ms <= leaf.time_ms < to_ms:
            continue
        relied: tuple[Sighting, ...] = ()
        if leaf.kind is LeafKind.SHARED and leaf.consent_ref:
            relied = _consent_history(consents, leaf.consent_ref)
        out.append(Sighting(i, leaf, relied))
    return out


def linked_subjects(leaves: Iterable[AuditLeaf], subject: str) -> frozenset[str]:
    """``subject`` and every keyed pseudonym linked with it as the log ends.

    Replays the LINKED and UNLINKED leaves in log order as the router applied
    them (broker/identity/decisions.py): a link merges the other child, and the
    children already merged into it, into the one that stays; an unlink splits
    one out again. Whichever of a linked child's pseudonyms is asked about, the
    answer is the whole child.
    """
    return replay_links(
        ((leaf.kind is LeafKind.LINKED, leaf.subject, leaf.identity_other) for leaf in leaves
         if leaf.kind in (LeafKind.LINKED, LeafKind.UNLINKED)
         and leaf.subject and leaf.identity_other),
        subject)


def replay_links(steps: Iterable[tuple[bool, str, str | None]], subject: str) -> frozenset[str]:
    """``subject`` and every id linked with it after ``steps`` in order: each is
    (a link, not an unlink; the child that stays; the other), as the router
    applies them. Ids are keyed pseudonyms (the log) or pseudonyms (the
    workspace, which names what its team received)."""
    merged: dict[str, set[str]] = {}
    for link, stays, other in steps:
        if not other:
            continue
        if link:
            into = merged.setdefault(stays, set())
            into.add(other)
            into |= merged.pop(other, set())
        else:
            merged.get(stays, set()).discard(other)
    for survivor, others in merged.items():
        if subject == survivor or subject in others:
            return frozenset({survivor, *others})
    return frozenset({subject})


def _consent_history(consents: dict[str, list[Sighting]], record_id: str) -> tuple[Sighting, ...]:
    """The CONSENT leaf that applied ``record_id``, then those of the records it replaced."""
    chain: list[Sighting] = []
    seen: set[str] = set()
    ref: str | None = record_id
    while ref and ref not in seen:
        seen.add(ref)
        applied = [s for s in consents.get(ref, ()) if s.leaf.outcome != "EXPIRED"]
        if not applied:
            break
        chain.append(applied[-1])
        ref = applied[-1].leaf.consent_ref
    return tuple(chain)
