"""Confidential feeds: each copy encrypted to its subscriber's X25519 key.

So that neither Kafka operators nor anyone else who can read the topic can read
a subscriber's feed. Per message (an ECIES-style hybrid scheme from
``cryptography`` primitives only):

- an ephemeral X25519 key pair; shared secret with the subscriber's public key;
- key = HKDF-SHA256(secret, salt = ephemeral public || recipient public,
  info = "safeshare/feed-encryption/v1" 0x00 subscriber id), 32 bytes;
- AES-256-GCM with a random 96-bit nonce, associated data = the subscriber id,
  so a copy moved to another subscriber's feed does not decrypt.

Wire: ``"SSFE" 0x01 | ephemeral public (32) | nonce (12) | ciphertext+tag``.
The plaintext is the FeedRecord's single-object encoding.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.errors import SafeshareError

MAGIC = b"SSFE\x01"
_INFO = b"safeshare/feed-encryption/v1\x00"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class FeedDecryptionError(SafeshareError):
    """A feed record cannot be decrypted with this key (wrong key, subscriber or tampering)."""


def _key(secret: bytes, eph: bytes, recipient: bytes, subscriber: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=eph + recipient,
        info=_INFO + subscriber.encode(),
    ).derive(secret)


def is_encrypted(value: bytes) -> bool:
    return value.startswith(MAGIC)


def encrypt_for(public_key_b64: str, subscriber: str, plaintext: bytes) -> bytes:
    recipient = base64.b64decode(public_key_b64, validate=True)
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(*_RAW)
    secret = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    nonce = os.urandom(12)
    sealed = AESGCM(_key(secret, eph_pub, recipient, subscriber)).encrypt(
        nonce, plaintext, subscriber.encode()
    )
    return MAGIC + eph_pub + nonce + sealed


def decrypt(private_key: X25519PrivateKey, subscriber: str, value: bytes) -> bytes:
    if not is_encrypted(value) or len(value) < len(MAGIC) + 32 + 12 + 16:
        raise FeedDecryptionError("not an encrypted feed record")
    eph_pub = value[len(MAGIC) : len(MAGIC) + 32]
    nonce = value[len(MAGIC) + 32 : len(MAGIC) + 44]
    recipient = private_key.public_key().public_bytes(*_RAW)
    secret = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    try:
        return AESGCM(_key(secret, eph_pub, recipient, subscriber)).decrypt(
            nonce, value[len(MAGIC) + 44 :], subscriber.encode()
        )
    except InvalidTag as exc:
        raise FeedDecryptionError(
            f"feed record does not decrypt for subscriber {subscriber!r} with this key"
        ) from exc


def new_key() -> tuple[X25519PrivateKey, str]:
    """A subscriber key pair: the private key and the public key (base64) for the policy."""
    key = X25519PrivateKey.generate()
    return key, base64.b64encode(key.public_key().public_bytes(*_RAW)).decode()


def save_private(key: X25519PrivateKey, path: os.PathLike[str] | str) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_private(path: os.PathLike[str] | str) -> X25519PrivateKey:
    with open(path, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise FeedDecryptionError(f"{path} is not an X25519 private key")
    return key
