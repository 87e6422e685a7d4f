"""Signing and verifying event messages; see the package docstring for the format."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.codec import long_bytes
from broker.errors import SafeshareError
from broker.policy.model import AgencyKey

DOMAIN = b"safeshare/event-signature/v1\x00"
FORMAT = 1
SIGNATURE_SIZE = 1 + 4 + 64
_NULL_BRANCH = b"\x00"
_BYTES_BRANCH = b"\x02"


class SignatureError(SafeshareError):
    """An event's signature is missing, malformed, from an unknown key, or wrong."""


def key_id(public_key: bytes) -> bytes:
    """First 4 bytes of SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key).digest()[:4]


def _tail(signature: bytes) -> bytes:
    return _BYTES_BRANCH + long_bytes(len(signature)) + signature


def _signed_bytes(agency_id: str, unsigned: bytes) -> bytes:
    return DOMAIN + agency_id.encode() + b"\x00" + unsigned


@dataclass(frozen=True)
class AgencySigner:
    """An agency's private signing key."""

    agency_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, agency_id: str) -> AgencySigner:
        return cls(agency_id, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        return key_id(self.public_key).hex()

    def registry_entry(self) -> dict[str, str]:
        """The agency's ``keys:`` entry for the policy file (public, safe to publish)."""
        return {
            "id": self.key_id,
            "algorithm": "ed25519",
            "public_key": base64.b64encode(self.public_key).decode(),
        }

    def sign(self, unsigned_message: bytes) -> bytes:
        """The signature field value for an unsigned event message."""
        sig = self.private_key.sign(_signed_bytes(self.agency_id, unsigned_message))
        return bytes([FORMAT]) + key_id(self.public_key) + sig

    # -- files ---------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the private key (PKCS#8 PEM), readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)

    @classmethod
    def load(cls, agency_id: str, path: Path) -> AgencySigner:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SignatureError(f"cannot load signing key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path} is not an Ed25519 private key")
        return cls(agency_id, key)


def sign_message(unsigned_message: bytes, signer: AgencySigner) -> bytes:
    """Turn an unsigned event message (signature null) into a signed one."""
    if not unsigned_message.endswith(_NULL_BRANCH):
        raise SignatureError("message is not unsigned: its signature field is not null")
    return unsigned_message[:-1] + _tail(signer.sign(unsigned_message))


def verify_message(
    message: bytes,
    signature: bytes | None,
    agency_id: str,
    keys: Sequence[AgencyKey],
    at_ms: int,
) -> str:
    """Check ``message``'s signature (its decoded ``signature`` field); return the key id.

    Raises :class:`SignatureError` saying what is wrong; never returns on failure.
    """
    if not signature:
        raise SignatureError(f"event is not signed; agency {agency_id!r} must sign its events")
    if len(signature) != SIGNATURE_SIZE or signature[0] != FORMAT:
        raise SignatureError(f"signature is malformed ({len(signature)} bytes)")
    tail = _tail(signature)
    if not message.endswith(tail):
        raise SignatureError("signature is not the message's last field")
    unsigned = message[: -len(tail)] + _NULL_BRANCH
    kid = signature[1:5]
    candidates = []
    for k in keys:
        try:
            raw = base64.b64decode(k.public_key, validate=True)
        except ValueError:
            continue
        if key_id(raw) == kid:
            candidates.append((k, raw))
    if not candidates:
        raise SignatureError(f"signed with key {kid.hex()}, not a key of agency {agency_id!r}")
    for k, raw in candidates:
        if not k.valid_at(at_ms):
            continue
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(
                signature[5:], _signed_bytes(agency_id, unsigned)
            )
        except InvalidSignature:
            continue
        return kid.hex()
    if not any(k.valid_at(at_ms) for k, _ in candidates):
        raise SignatureError(f"key {kid.hex()} of agency {agency_id!r} is not valid now")
    raise SignatureError(f"signature does not verify with agency {agency_id!r} key {kid.hex()}")


def signature_problem(
    message: bytes,
    signature: bytes | None,
    agency_id: str,
    keys: Sequence[AgencyKey],
    *,
    required: bool,
    at_ms: int,
) -> str | None:
    """Why ``message``'s signature is not acceptable to the router, or None if it is.

    A signature is needed when the policy requires one (``event_signatures:
    required``) or the agency has registered keys; one that is present is always
    checked. The router and the publisher (:mod:`broker.intake`) both ask here,
    so a publisher refuses exactly what the router would quarantine.
    """
    if not signature and not keys and not required:
        return None
    try:
        verify_message(message, signature, agency_id, keys, at_ms)
    except SignatureError as exc:
        return str(exc)
    return None
