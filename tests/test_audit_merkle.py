"""RFC 6962 / RFC 9162 Merkle tree: known answers, a naive reference, and tampering."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.exceptions import AuditError, VerificationError
from broker.audit.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    hash_children,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)

VECTORS = json.loads((Path(__file__).parent / "data/audit/rfc6962_vectors.json").read_text())
LEAVES = [bytes.fromhex(h) for h in VECTORS["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in VECTORS["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# -- a naive, literal transcription of RFC 6962 §2.1 ---------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 §2.1 defines it."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 6962 §2.1.1."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 6962 §2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def tree_of(leaves: list[bytes]) -> MerkleTree:
    t = MerkleTree()
    for leaf in leaves:
        t.append(leaf)
    return t


# -- known answers ---------------------------------------------------------------


def test_hashing_primitives_use_the_rfc_domain_prefixes() -> None:
    assert EMPTY_ROOT.hex() == VECTORS["empty_root"]
    assert hash_leaf(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        hash_children(b"a" * 32, b"b" * 32)
        == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert MerkleTree().root() == EMPTY_ROOT


def test_roots_of_the_reference_eight_leaves() -> None:
    tree = tree_of(LEAVES)
    for size in range(1, 9):
        assert tree.root(size) == ROOTS[size - 1], f"root at size {size}"
        assert ref_mth(LEAVES[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize("vec", VECTORS["inclusion"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_inclusion_vectors(vec: dict[str, object]) -> None:
    index, size = int(vec["index"]), int(vec["size"])  # type: ignore[call-overload]
    proof = [bytes.fromhex(h) for h in vec["proof"]]  # type: ignore[attr-defined]
    tree = tree_of(LEAVES[:size])
    assert tree.inclusion_proof(index) == proof
    leaf_hash = hash_leaf(LEAVES[index])
    root = ROOTS[size - 1]
    verify_inclusion(leaf_hash, index, size, proof, root)
    for desc, probe in _corrupt_inclusion(index, size, proof, root, leaf_hash):
        with pytest.raises(VerificationError):
            verify_inclusion(*probe)
            pytest.fail(f"verified corrupted inclusion proof: {desc}")


@pytest.mark.parametrize(
    "vec", VECTORS["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_consistency_vectors(vec: dict[str, object]) -> None:
    size1, size2 = int(vec["size1"]), int(vec["size2"])  # type: ignore[call-overload]
    proof = [bytes.fromhex(h) for h in vec["proof"]]  # type: ignore[attr-defined]
    tree = tree_of(LEAVES[:size2])
    assert tree.consistency_proof(size1) == proof
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    verify_consistency(size1, size2, proof, root1, root2)
    if proof:
        for desc, probe in _corrupt_consistency(size1, size2, root1, root2, proof):
            with pytest.raises(VerificationError):
                verify_consistency(*probe)
                pytest.fail(f"verified corrupted consistency proof: {desc}")


def test_transparency_dev_testdata_files() -> None:
    b64 = base64.b64decode
    inc = VECTORS["testdata_json"]["inclusion"]
    verify_inclusion(
        b64(inc["leafHash"]),
        inc["leafIdx"],
        inc["treeSize"],
        [b64(p) for p in inc["proof"]],
        b64(inc["root"]),
    )
    con = VECTORS["testdata_json"]["consistency"]
    verify_consistency(
        con["size1"],
        con["size2"],
        [b64(p) for p in con["proof"]],
        b64(con["root1"]),
        b64(con["root2"]),
    )


def _corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    """The corruptions transparency-dev/merkle proof/verify_test.go applies."""
    probes: list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]] = [
        ("index - 1", (leaf, index - 1, size, proof, root)),
        ("index + 1", (leaf, index + 1, size, proof, root)),
        ("index ^ 2", (leaf, index ^ 2, size, proof, root)),
        ("size * 2", (leaf, index, size * 2, proof, root)),
        ("size // 2", (leaf, index, size // 2, proof, root)),
        ("wrong leaf", (b"WrongLeaf", index, size, proof, root)),
        ("empty root", (leaf, index, size, proof, EMPTY_ROOT)),
        ("random root", (leaf, index, size, proof, SOME_HASH)),
        ("trailing garbage", (leaf, index, size, [*proof, b""], root)),
        ("trailing root", (leaf, index, size, [*proof, root], root)),
        ("preceding garbage", (leaf, index, size, [b"", *proof], root)),
        ("preceding root", (leaf, index, size, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((f"modified proof[{i}] bit 3", (leaf, index, size, bad, root)))
    if proof:
        probes.append(("removed component", (leaf, index, size, proof[:-1], root)))
    if len(proof) > 1:
        probes.append(
            ("inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
        )
    return probes


def _corrupt_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, list[bytes], bytes, bytes]]]:
    probes: list[tuple[str, tuple[int, int, list[bytes], bytes, bytes]]] = [
        ("size1 - 1", (size1 - 1, size2, proof, root1, root2)),
        ("size1 + 1", (size1 + 1, size2, proof, root1, root2)),
        ("size1 ^ 2", (size1 ^ 2, size2, proof, root1, root2)),
        ("size2 * 2", (size1, size2 * 2, proof, root1, root2)),
        ("size2 // 2", (size1, size2 // 2, proof, root1, root2)),
        ("wrong root1", (size1, size2, proof, b"WrongRoot", root2)),
        ("wrong root2", (size1, size2, proof, root1, b"WrongRoot")),
        ("swapped roots", (size1, size2, proof, root2, root1)),
        ("empty proof", (size1, size2, [], root1, root2)),
        ("trailing garbage", (size1, size2, [*proof, b""], root1, root2)),
        ("trailing root1", (size1, size2, [*proof, root1], root1, root2)),
        ("trailing root2", (size1, size2, [*proof, root2], root1, root2)),
        ("preceding garbage", (size1, size2, [b"", *proof], root1, root2)),
        ("preceding root1", (size1, size2, [root1, *proof], root1, root2)),
        ("preceding root2", (size1, size2, [root2, *proof], root1, root2)),
        ("preceding proof[0]", (size1, size2, [proof[0], *proof], root1, root2)),
        ("truncated proof", (size1, size2, proof[:-1], root1, root2)),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((f"modified proof[{i}] bit 4", (size1, size2, bad, root1, root2)))
    return probes


def test_consistency_edge_cases_match_transparency_dev() -> None:
    r1, r2 = b"don't care 1", b"don't care 2"
    none: list[bytes] = []
    ok = [(0, 0, none, r1, r1), (0, 1, none, r1, r2), (1, 1, none, r2, r2)]
    bad: list[tuple[int, int, list[bytes], bytes, bytes]] = [
        (0, 0, [], r1, r2),
        (1, 1, [], r1, r2),
        (1, 0, [], r1, r2),
        (2, 1, [], r1, r2),
        (1, 2, [], r1, r2),
        (0, 0, [], EMPTY_ROOT, r2),
        (1, 1, [], EMPTY_ROOT, r2),
        (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
        (1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
    ]
    for args in ok:
        verify_consistency(*args)
    for args in bad:
        with pytest.raises(VerificationError):
            verify_consistency(*args)


def test_inclusion_rejects_impossible_positions() -> None:
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        with pytest.raises(VerificationError):
            verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    h = hash_leaf(b"data")
    verify_inclusion(h, 0, 1, [], h)
    with pytest.raises(VerificationError):
        verify_inclusion(h, 0, 1, [], b"")


# -- every (index, size) up to 64 against the naive reference --------------------

DATA64 = [f"leaf-{i}".encode() for i in range(64)]
TREE64 = tree_of(DATA64)


def test_all_roots_inclusion_proofs_up_to_64() -> None:
    for size in range(1, 65):
        root = TREE64.root(size)
        assert root == ref_mth(DATA64[:size])
        for index in range(size):
            proof = TREE64.inclusion_proof(index, size)
            assert proof == ref_path(index, DATA64[:size]), (index, size)
            verify_inclusion(hash_leaf(DATA64[index]), index, size, proof, root)


def test_all_consistency_proofs_up_to_64() -> None:
    for size2 in range(1, 65):
        root2 = TREE64.root(size2)
        for size1 in range(1, size2 + 1):
            proof = TREE64.consistency_proof(size1, size2)
            expected = [] if size1 == size2 else ref_subproof(size1, DATA64[:size2], True)
            assert proof == expected, (size1, size2)
            verify_consistency(size1, size2, proof, TREE64.root(size1), root2)


def test_error_message_names_leaf_and_both_roots() -> None:
    proof = TREE64.inclusion_proof(41, 64)
    root = TREE64.root(64)
    with pytest.raises(VerificationError) as err:
        verify_inclusion(hash_leaf(b"not leaf 41"), 41, 64, proof, root)
    msg = str(err.value)
    assert msg.startswith("inclusion proof for leaf 41 in a tree of size 64 does not verify")
    assert f"expected root {root.hex()}" in msg and "calculated " in msg


def test_tree_refuses_out_of_range_requests() -> None:
    tree = tree_of(DATA64[:5])
    with pytest.raises(AuditError):
        tree.inclusion_proof(5)
    with pytest.raises(AuditError):
        tree.root(6)
    with pytest.raises(AuditError):
        tree.consistency_proof(4, 3)
    with pytest.raises(AuditError):
        tree.append_hash(b"short")


def test_extend_equals_append_and_large_proofs_are_logarithmic() -> None:
    data = [i.to_bytes(4, "big") for i in range(5000)]
    a = tree_of(data)
    b = MerkleTree()
    b.extend(data)
    assert a.root() == b.root()
    assert a.root(4097) == ref_mth(data[:4097])
    proof = b.inclusion_proof(4321)
    assert len(proof) <= 13
    verify_inclusion(hash_leaf(data[4321]), 4321, 5000, proof, b.root())
    cproof = b.consistency_proof(3333)
    assert len(cproof) <= 2 * 13
    verify_consistency(3333, 5000, cproof, b.root(3333), b.root())


# -- property tests ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    leaves=st.lists(st.binary(max_size=16), min_size=1, max_size=200),
    data=st.data(),
)
def test_property_proofs_verify_and_tampering_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    tree = tree_of(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    root = tree.root(size)
    assert root == ref_mth(leaves[:size])
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(hash_leaf(leaves[index]), index, size, proof, root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = bytes(
            [
                bad[i][bit // 8] ^ (1 << (bit % 8)) if j == bit // 8 else c
                for j, c in enumerate(bad[i])
            ]
        )
        with pytest.raises(VerificationError):
            verify_inclusion(hash_leaf(leaves[index]), index, size, bad, root)
    size1 = data.draw(st.integers(1, size))
    cproof = tree.consistency_proof(size1, size)
    verify_consistency(size1, size, cproof, tree.root(size1), root)
    if size1 < size:
        wrong = hashlib.sha256(root).digest()
        with pytest.raises(VerificationError):
            verify_consistency(size1, size, cproof, tree.root(size1), wrong)


@settings(max_examples=100, deadline=None)
@given(leaves=st.lists(st.binary(max_size=8), min_size=2, max_size=64), data=st.data())
def test_property_different_leaf_changes_root(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    changed = list(leaves)
    changed[index] = leaves[index] + b"!"
    assert tree_of(changed).root() != tree_of(leaves).root()


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.integers(0, 40), max_size=12))
def test_property_chunked_extend_equals_one_by_one(chunks: list[int]) -> None:
    one, bulk = MerkleTree(), MerkleTree()
    for n, size in enumerate(chunks, start=1):
        data = [n.to_bytes(4, "big") + bytes([i]) for i in range(size)]
        for d in data:
            one.append(d)
        if n % 2:
            bulk.extend(data)
        else:
            bulk.extend_hashes([hash_leaf(d) for d in data])
        assert bulk.size == one.size
        for level_one, level_bulk in zip(one._levels, bulk._levels, strict=False):  # noqa: SLF001
            assert level_one == level_bulk
        assert bulk.root() == one.root()
