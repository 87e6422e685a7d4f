"""RFC 6962 / RFC 9162 Merkle tree: hashing, an append-only tree, proofs, verification.

Hashing is exactly RFC 9162 §2.1.1 (identical to RFC 6962 §2.1) with SHA-256:

- the hash of an empty list is ``SHA-256("")``;
- a leaf hash is ``SHA-256(0x00 || leaf data)``;
- an interior node is ``SHA-256(0x01 || left || right)``, where the left subtree
  holds the largest power of two of leaves strictly smaller than the list.

:class:`MerkleTree` keeps every *complete* subtree hash (level ``k`` holds the
hashes of the aligned runs of ``2**k`` leaves), so an append costs one leaf
hash plus, amortised, one node hash, and any root, inclusion proof or
consistency proof is assembled from O(log n) stored hashes.

:func:`verify_inclusion` and :func:`verify_consistency` follow the verification
algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step; they return ``None``
or raise :class:`~broker.audit.exceptions.VerificationError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256

from broker.audit.exceptions import AuditError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "hash_children",
    "hash_leaf",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))
_NODE_PREFIX = b"\x01"  # RFC 9162 §2.1.1: HASH(0x01 || MTH(left) || MTH(right))

#: RFC 9162 §2.1.1: "The hash of an empty list is the hash of an empty string".
EMPTY_ROOT = sha256(b"").digest()


def hash_leaf(data: bytes) -> bytes:
    """Leaf hash of ``data``: ``SHA-256(0x00 || data)`` (RFC 9162 §2.1.1)."""
    return sha256(_LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Interior node hash: ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1)."""
    return sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``), RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 6962 Merkle tree over leaf hashes.

    ``self._levels[k][i]`` is the hash of the complete subtree over leaves
    ``[i * 2**k, (i + 1) * 2**k)``. Level 0 is the leaf hashes. A level-``k``
    hash is written as soon as its ``2**k`` leaves are present, so every aligned
    power-of-two run inside the tree is one list lookup away.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append_hash(h)

    def __len__(self) -> int:
        return len(self._levels[0])

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        """Hash ``data`` as a leaf, append it, and return its index."""
        return self.append_hash(sha256(_LEAF_PREFIX + data).digest())

    def append_hash(self, leaf_hash: bytes) -> int:
        """Append an already computed leaf hash and return its index."""
        if len(leaf_hash) != HASH_SIZE:
            raise AuditError(f"a leaf hash has {HASH_SIZE} bytes, not {len(leaf_hash)}")
        levels = self._levels
        row = levels[0]
        row.append(leaf_hash)
        n = len(row)
        index = n - 1
        h = leaf_hash
        level = 0
        # An even count at a level means its last two entries just became a
        # complete pair: their parent is now a complete subtree one level up.
        while not n & 1:
            h = sha256(_NODE_PREFIX + row[-2] + h).digest()
            level += 1
            if level == len(levels):
                levels.append([])
            row = levels[level]
            row.append(h)
            n = len(row)
        return index

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaves (raw leaf data, not hashes). The replay fast path.

        Hashes the leaves in one pass, then each level's newly completed pairs
        in one pass per level: the same hashes as repeated :meth:`append`,
        with far less interpreter overhead.
        """
        self._extend_hashes([sha256(_LEAF_PREFIX + data).digest() for data in leaves])

    def extend_hashes(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append many leaf hashes at once (see :meth:`extend`)."""
        for h in leaf_hashes:
            if len(h) != HASH_SIZE:
                raise AuditError(f"a leaf hash has {HASH_SIZE} bytes, not {len(h)}")
        self._extend_hashes(leaf_hashes)

    def _extend_hashes(self, leaf_hashes: Sequence[bytes]) -> None:
        levels = self._levels
        levels[0].extend(leaf_hashes)
        level = 0
        while True:
            row = levels[level]
            if level + 1 == len(levels):
                if len(row) < 2:
                    return
                levels.append([])
            parents = levels[level + 1]
            # Level k+1 always holds len(level k) // 2 hashes: hash the pairs
            # that became complete since the last append.
            i = 2 * len(parents)
            if i + 1 >= len(row):
                return
            parents.extend(
                [
                    sha256(_NODE_PREFIX + left + right).digest()
                    for left, right in zip(row[i::2], row[i + 1 :: 2], strict=False)
                ]
            )
            level += 1

    def root_with_suffix(self, size: int, suffix_hashes: Iterable[bytes]) -> bytes:
        """MTH of this tree's first ``size`` leaves followed by ``suffix_hashes``.

        Answers "what would the root be if the leaves from ``size`` on were
        these?" without copying the tree: the first ``size`` leaves are taken
        as their O(log n) complete subtrees (a compact range, as
        transparency-dev/merkle ``compact.Range``), the suffix is merged in
        leaf by leaf, and the range is folded right to left into the RFC 9162
        §2.1.1 root. Verification uses it to test what a tampered bundle did
        (a leaf inserted, two swapped) against a signed root.
        """
        size = self._check_size(size)
        # Complete subtrees covering [0, size), largest (leftmost) first.
        stack: list[tuple[int, bytes]] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                stack.append((level, self._levels[level][start >> level]))
                start += 1 << level
        for h in suffix_hashes:
            level = 0
            while stack and stack[-1][0] == level:
                h = sha256(_NODE_PREFIX + stack.pop()[1] + h).digest()
                level += 1
            stack.append((level, h))
        if not stack:
            return EMPTY_ROOT
        root = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            root = sha256(_NODE_PREFIX + left + root).digest()
        return root

    def leaf_hash(self, index: int) -> bytes:
        """The stored hash of leaf ``index``."""
        self._check_index(index, self.size)
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        """The tree head MTH(D[0:size]) for ``size`` (default: the whole tree)."""
        size = self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._mth(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 §2.1.1 / RFC 9162 §2.1.3.1."""
        size = self._check_size(size)
        self._check_index(index, size)
        proof: list[bytes] = []
        start, end, m = 0, size, index
        # Walk down from the root; the RFC's recursion appends the sibling
        # *after* the sub-path, so collect top-down and reverse.
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                proof.append(self._mth(start + k, end))
                end = start + k
            else:
                proof.append(self._mth(start, start + k))
                start += k
                m -= k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) of RFC 6962 §2.1.2 / RFC 9162 §2.1.4.1.

        Empty when ``size1`` is 0 or equals ``size2`` (nothing to prove).
        """
        size2 = self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise AuditError(
                f"no consistency proof from size {size1} to size {size2}: "
                "sizes must satisfy 0 <= size1 <= size2"
            )
        if size1 == 0 or size1 == size2:
            return []
        proof: list[bytes] = []
        start, end, m, whole = 0, size2, size1, True
        # SUBPROOF(m, D[start:end], b), unrolled top-down, reversed at the end.
        while True:
            n = end - start
            if m == n:
                if not whole:
                    proof.append(self._mth(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self._mth(start + k, end))
                end = start + k
            else:
                proof.append(self._mth(start, start + k))
                start += k
                m -= k
                whole = False
        proof.reverse()
        return proof

    # -- internals -----------------------------------------------------------

    def _mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that occurs in the RFC recursion.

        Such a range starts at a multiple of the largest power of two not
        exceeding its length, so its left part is always a stored complete
        subtree; only the right edge is recomputed (O(log n) hashes).
        """
        n = end - start
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self._levels[level][start >> level]
        k = _split(n)
        right = self._mth(start + k, end)
        level = k.bit_length() - 1
        return sha256(_NODE_PREFIX + self._levels[level][start >> level] + right).digest()

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise AuditError(f"tree size {size} is outside this tree (0..{self.size})")
        return size

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise AuditError(f"leaf index {index} is outside a tree of size {size}")


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ------------------------------


def _hex(h: bytes) -> str:
    return h.hex() if h else "<empty>"


def _check_hashes(what: str, proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise VerificationError(
                f"{what}: proof hash {i} has {len(p)} bytes; SHA-256 hashes have {HASH_SIZE}"
            )


def _inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes PATH(index, D[size]) has (for error messages only)."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def _fold(
    fn: int,
    sn: int,
    path: Sequence[bytes],
    fr: bytes | None,
    sr: bytes,
    *,
    too_many: str,
    too_few: str,
) -> tuple[bytes | None, bytes]:
    """The hash-chaining loop both proof verifications share.

    RFC 9162 §2.1.3.2 step 4 (inclusion: ``sr`` is ``r``, no ``fr``) and
    §2.1.4.2 step 6 (consistency: ``fr`` and ``sr``): for each ``c`` in
    ``path``, a left sibling (``LSB(fn)`` set, or ``fn == sn``) updates both
    hashes as ``HASH(0x01 || c || x)`` and, if ``fn`` was even, shifts until it
    is odd or zero; a right sibling updates ``sr`` only, ``HASH(0x01 || sr || c)``;
    then both indices shift right. The path must end with ``sn`` at 0 (the
    first half of step 5 / the check of step 7); else the message says which way
    the path's length is wrong.
    """
    for c in path:
        if sn == 0:
            raise VerificationError(too_many)
        if fn & 1 or fn == sn:
            if fr is not None:
                fr = sha256(_NODE_PREFIX + c + fr).digest()
            sr = sha256(_NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(too_few)
    return fr, sr


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Run RFC 9162 §2.1.3.2 steps 1-4 and return the calculated root ``r``.

    Raises :class:`VerificationError` where the algorithm says "fail the proof
    verification" before the final comparison (index out of range, proof too
    long or too short for the position).
    """
    what = f"inclusion proof for leaf {index} in a tree of size {size}"
    # Step 1: leaf_index must be smaller than tree_size.
    if not 0 <= index < size:
        raise VerificationError(f"{what} does not verify: leaf index is not inside the tree")
    if len(leaf_hash) != HASH_SIZE:
        raise VerificationError(f"{what} does not verify: leaf hash has {len(leaf_hash)} bytes")
    _check_hashes(what, proof)
    wrong_length = (
        f"{what} does not verify: it has {len(proof)} hashes, the path has "
        f"{_inclusion_proof_length(index, size)}"
    )
    # Steps 2-4: fn = leaf_index, sn = tree_size - 1, r = leaf_hash, then the fold.
    _, r = _fold(
        index, size - 1, proof, None, leaf_hash, too_many=wrong_length, too_few=wrong_length
    )
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. Returns ``None``; raises :class:`VerificationError`.
    """
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    # Step 5: compare r against root_hash.
    if calculated != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} in a tree of size {size} does not verify: "
            f"expected root {_hex(root)}, calculated {calculated.hex()}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify that the tree of ``size2`` with ``root2`` extends the one of ``size1``/``root1``.

    RFC 9162 §2.1.4.2. The algorithm there assumes ``0 < size1 < size2``; the
    edge cases are handled as transparency-dev/merkle does: equal sizes need an
    empty proof and equal roots, and any tree is consistent with the empty tree
    (empty proof). Returns ``None``; raises :class:`VerificationError`.
    """
    what = f"consistency proof from size {size1} to size {size2}"
    if size1 < 0 or size2 < size1:
        raise VerificationError(f"{what} does not verify: the tree cannot shrink")
    if size1 == size2:
        if proof:
            raise VerificationError(f"{what} does not verify: equal sizes need an empty proof")
        if root1 != root2:
            raise VerificationError(
                f"{what} does not verify: equal sizes but different roots "
                f"{_hex(root1)} and {_hex(root2)}"
            )
        return
    if size1 == 0:
        if proof:
            raise VerificationError(f"{what} does not verify: from the empty tree needs no proof")
        return
    # Step 1: an empty path fails.
    if not proof:
        raise VerificationError(f"{what} does not verify: the proof is empty")
    _check_hashes(what, proof)
    if len(root1) != HASH_SIZE or len(root2) != HASH_SIZE:
        raise VerificationError(f"{what} does not verify: roots must be {HASH_SIZE} bytes")
    path = list(proof)
    # Step 2: if first is an exact power of 2, prepend first_hash.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Step 3.
    fn, sn = size1 - 1, size2 - 1
    # Step 4: right-shift both while LSB(fn) is set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Steps 5-7 (the end of step 7's sn check): fr = sr = path[0], then the fold.
    fr, sr = _fold(
        fn,
        sn,
        path[1:],
        path[0],
        path[0],
        too_many=f"{what} does not verify: the proof has too many hashes",
        too_few=f"{what} does not verify: the proof has too few hashes",
    )
    assert fr is not None
    if fr != root1:
        raise VerificationError(
            f"{what} does not verify: expected first root {root1.hex()}, calculated {fr.hex()}"
        )
    if sr != root2:
        raise VerificationError(
            f"{what} does not verify: expected second root {root2.hex()}, calculated {sr.hex()}"
        )
