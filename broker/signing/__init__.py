"""Agency signatures on concern events (Ed25519); confidential feeds (HPKE) are
in :mod:`broker.signing.feeds` and subscribers' feed keyrings in
:mod:`broker.signing.feedkeys`.

An agency signs each event it publishes; the router checks the signature
against the agency's keys in the policy registry before anything is shared.
A forged, missing or mismatched signature sends the event to quarantine
(``BAD_SIGNATURE``), audited, never shared.

What is signed
--------------
The event's own wire bytes: the Avro single-object encoding of the event with
its ``signature`` field null. ``signature`` is the envelope's *last* field, a
``["null", "bytes"]`` union, so in the Avro binary encoding the unsigned message
ends with the union index ``0x00`` and the signed one ends with ``0x02``, the
zig-zag length and the signature bytes. The verifier therefore recovers the
exact bytes that were signed from the message it received — no re-encoding,
and so no dependence on the reader's schema version — and an implementation in
any language can do the same.

Signature bytes: ``0x01`` (format) || 4-byte key id || 64-byte Ed25519
signature over ``"safeshare/event-signature/v1" 0x00 || agency id 0x00 ||
unsigned message``. The key id is the first 4 bytes of SHA-256 of the raw
public key, so a verifier picks the key without trying them all; binding the
agency id into the signed bytes stops one agency's signature being replayed as
another's.
"""

from broker.signing.events import (
    AgencySigner,
    SignatureError,
    key_id,
    sign_message,
    signature_problem,
    verify_message,
)

__all__ = [
    "AgencySigner",
    "SignatureError",
    "key_id",
    "sign_message",
    "signature_problem",
    "verify_message",
]
