"""The offline export bundle: everything an auditor needs, in one JSON file.

Layout (``format`` = ``safeshare-audit-bundle/v1``)::

    {
      "format": "safeshare-audit-bundle/v1",
      "origin": "safeshare.example/audit/0",
      "leaves": ["<base64 of leaf 0's canonical bytes>", "<leaf 1>", ...],
      "checkpoints": [
        {"note": "<signed checkpoint note, as text>",
         "cosignatures": ["— witness.example/w1 <base64>\\n", ...]},
        ...
      ],
      "key_lists": ["<signed key list note, version 1>", "<version 2>", ...],
      "log_vkeys": ["<vkey>", ...],
      "witness_vkeys": ["<vkey>", ...]
    }

``leaves[i]`` is the leaf at tree index ``i``: the bundle always starts at the
first leaf of the shard, because the tree is recomputed from scratch.
Checkpoints are in increasing size order. ``log_vkeys`` and ``witness_vkeys``
are informational: an auditor verifies against keys it already trusts, never
against keys that came inside the bundle.

Everything read from a bundle is untrusted until :func:`broker.audit.verify.verify_bundle`
says otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.audit import note as _note
from broker.audit.exceptions import MalformedError

__all__ = ["Bundle", "BundleCheckpoint"]

FORMAT = "safeshare-audit-bundle/v1"


@dataclass(frozen=True)
class BundleCheckpoint:
    """A signed checkpoint note and the witness cosignature lines gathered for it."""

    note: bytes
    cosignatures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bundle:
    """An exported audit log shard."""

    origin: str
    leaves: tuple[bytes, ...]
    checkpoints: tuple[BundleCheckpoint, ...]
    key_lists: tuple[bytes, ...] = ()
    log_vkeys: tuple[str, ...] = ()
    witness_vkeys: tuple[str, ...] = field(default=())

    @classmethod
    def create(
        cls,
        *,
        origin: str,
        leaves: Sequence[bytes],
        checkpoints: Sequence[BundleCheckpoint | bytes],
        key_lists: Sequence[bytes] = (),
        log_vkeys: Sequence[str] = (),
        witness_vkeys: Sequence[str] = (),
    ) -> Bundle:
        cps = tuple(
            c if isinstance(c, BundleCheckpoint) else BundleCheckpoint(c) for c in checkpoints
        )
        return cls(
            origin, tuple(leaves), cps, tuple(key_lists), tuple(log_vkeys), tuple(witness_vkeys)
        )

    def to_json_value(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "leaves": [_note.b64encode(leaf) for leaf in self.leaves],
            "checkpoints": [
                {"note": c.note.decode("utf-8"), "cosignatures": list(c.cosignatures)}
                for c in self.checkpoints
            ],
            "key_lists": [k.decode("utf-8") for k in self.key_lists],
            "log_vkeys": list(self.log_vkeys),
            "witness_vkeys": list(self.witness_vkeys),
        }

    def to_json(self) -> bytes:
        return (
            json.dumps(self.to_json_value(), indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes) -> Bundle:
        """Parse a bundle; raise :class:`MalformedError` naming the broken part."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedError(f"bundle is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise MalformedError(f"not a {FORMAT} bundle")
        origin = doc.get("origin")
        if not isinstance(origin, str):
            raise MalformedError("bundle has no origin")
        leaves = []
        for i, b64 in enumerate(_list(doc, "leaves")):
            try:
                leaves.append(_note.b64decode_strict(_s(b64, f"leaf {i}"), canonical=True))
            except ValueError as exc:
                raise MalformedError(f"bundle leaf {i} is not base64: {exc}") from exc
        checkpoints = []
        for j, c in enumerate(_list(doc, "checkpoints")):
            if not isinstance(c, dict):
                raise MalformedError(f"bundle checkpoint {j} is not an object")
            cos = c.get("cosignatures", [])
            if not isinstance(cos, list):
                raise MalformedError(f"bundle checkpoint {j}: cosignatures is not a list")
            checkpoints.append(
                BundleCheckpoint(
                    _s(c.get("note"), f"checkpoint {j} note").encode("utf-8"),
                    tuple(_s(x, f"checkpoint {j} cosignature") for x in cos),
                )
            )
        return cls(
            origin,
            tuple(leaves),
            tuple(checkpoints),
            tuple(_s(k, "key list").encode("utf-8") for k in _list(doc, "key_lists")),
            tuple(_s(v, "log vkey") for v in _list(doc, "log_vkeys")),
            tuple(_s(v, "witness vkey") for v in _list(doc, "witness_vkeys")),
        )

    def write(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Bundle:
        return cls.from_json(Path(path).read_bytes())


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    v = doc.get(key, [])
    if not isinstance(v, list):
        raise MalformedError(f"bundle {key} is not a list")
    return v


def _s(v: object, what: str) -> str:
    if not isinstance(v, str):
        raise MalformedError(f"bundle {what} is not a string")
    return v
