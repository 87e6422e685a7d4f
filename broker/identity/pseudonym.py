"""The partnership pseudonym: HMAC-SHA256 under a versioned key the router holds.

NHS numbers are few enough (under 10^9 valid ones) to enumerate, so an unkeyed
hash of one is no pseudonym at all. The router derives
``HMAC-SHA256(key_v, "safeshare/partnership-pseudonym" 0x00 kind 0x00 value)``
(RFC 2104) and writes it as ``v<version>:<first 16 bytes, base32>``, so a
pseudonym names the key version it was made under. ``kind`` is ``nhs`` for the
NHS number (the s.16LC consistent identifier) and ``child`` for a linkage
anchor: a random id the identity index gives a child known without one.

Keys live in a directory only the router reads (``<home>/keys/partnership/``,
or ``SAFESHARE_PARTNERSHIP_KEYS``), one file per version, ``<n>.key``, 32
random bytes, mode 0600; they never travel on Kafka. Rotation (docs/IDENTITY.md)
adds version n+1 and makes it current; old versions are kept so that
pseudonyms made under them can be recomputed and mapped to the current ones
(:meth:`PartnershipKeys.rotation_map`), and are deleted only once nothing
needs that mapping.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes, hmac

from broker.identity.exceptions import IdentityError

KEY_BYTES: Final = 32
_DOMAIN: Final = b"safeshare/partnership-pseudonym\x00"
_KEY_FILE: Final = re.compile(r"^([1-9][0-9]{0,5})\.key$")
_PSEUDONYM: Final = re.compile(r"^v([1-9][0-9]{0,5}):([a-z2-7]{26})$")

#: Kinds of value a pseudonym may be derived from.
KINDS: Final = frozenset({"nhs", "child"})


def version_of(pseudonym: str) -> int | None:
    """The key version a partnership pseudonym was made under; None if it is not one."""
    m = _PSEUDONYM.match(pseudonym)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class PartnershipKeys:
    """The partnership's pseudonym keys by version; the highest is current."""

    keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        if not self.keys:
            raise IdentityError("no partnership pseudonym key")
        for version, key in self.keys.items():
            if len(key) < KEY_BYTES:
                raise IdentityError(f"partnership key v{version} is shorter than {KEY_BYTES} bytes")

    @property
    def current(self) -> int:
        return max(self.keys)

    def pseudonym(self, kind: str, value: str, *, version: int | None = None) -> str:
        """The pseudonym of ``value`` (an NHS number or a linkage anchor) under one key."""
        if kind not in KINDS:
            raise ValueError(f"unknown pseudonym kind {kind!r}")
        v = self.current if version is None else version
        try:
            key = self.keys[v]
        except KeyError:
            raise IdentityError(f"no partnership key v{v}") from None
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(_DOMAIN + kind.encode() + b"\x00" + value.encode("utf-8"))
        digest = mac.finalize()[:16]
        return f"v{v}:" + base64.b32encode(digest).decode().rstrip("=").lower()

    def of_nhs_number(self, nhs_number: str) -> str:
        """The current pseudonym of a child known by its (canonical, valid) NHS number."""
        return self.pseudonym("nhs", nhs_number)

    def every_version(self, kind: str, value: str) -> dict[int, str]:
        """The pseudonym of ``value`` under every key held, by version."""
        return {v: self.pseudonym(kind, value, version=v) for v in sorted(self.keys)}

    def rotation_map(self, anchors: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Old pseudonym -> current pseudonym, for each ``(kind, value)`` anchor.

        The identity index keeps each child's anchor (encrypted), so after a
        rotation the router maps every pseudonym a subscriber may already hold
        to the one it uses now.
        """
        out: dict[str, str] = {}
        for kind, value in anchors:
            versions = self.every_version(kind, value)
            now = versions[self.current]
            for v, old in versions.items():
                if v != self.current:
                    out[old] = now
        return out

    # -- files --------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path, *, create: bool = False) -> PartnershipKeys:
        """Every ``<n>.key`` in ``directory``; with ``create``, v1 is made if there is none."""
        keys: dict[int, bytes] = {}
        try:
            names = sorted(p.name for p in directory.iterdir())
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise IdentityError(
                f"cannot read partnership keys in {directory}: {exc.strerror}"
            ) from exc
        for name in names:
            m = _KEY_FILE.match(name)
            if m is None:
                continue
            path = directory / name
            try:
                keys[int(m.group(1))] = path.read_bytes()
            except OSError as exc:
                raise IdentityError(f"cannot read partnership key {path}: {exc.strerror}") from exc
        if not keys:
            if not create:
                raise IdentityError(f"no partnership pseudonym key in {directory}")
            return cls.rotate(directory)
        return cls(keys)

    @classmethod
    def rotate(cls, directory: Path) -> PartnershipKeys:
        """Add the next key version (mode 0600) and return the keys with it current."""
        try:
            existing = cls.load(directory).keys
        except IdentityError:
            existing = {}
        version = max(existing, default=0) + 1
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = secrets.token_bytes(KEY_BYTES)
        path = directory / f"{version}.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise IdentityError(f"cannot write partnership key {path}: {exc.strerror}") from exc
        return cls({**existing, version: data})
