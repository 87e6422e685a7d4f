"""CRC-64-AVRO fingerprints and the single-object header.

Avro 1.11 specification, "Schema Fingerprints": the 64-bit Rabin fingerprint
(CRC-64-AVRO) of a schema's Parsing Canonical Form, with the empty value
``0xc15d213aa4d7a795``. "Single-object encoding": a message is the two marker
bytes ``C3 01``, the fingerprint as 8 bytes little-endian, then the Avro binary
encoding of the datum.
"""

from __future__ import annotations

from typing import Final

MAGIC: Final = b"\xc3\x01"
FINGERPRINT_SIZE: Final = 8
HEADER_SIZE: Final = len(MAGIC) + FINGERPRINT_SIZE

_EMPTY: Final = 0xC15D213AA4D7A795


def _table() -> tuple[int, ...]:
    # The table exactly as the spec's reference code builds it.
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_TABLE: Final = _table()


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO of ``data`` as 8 bytes, little-endian (the single-object byte order)."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(FINGERPRINT_SIZE, "little")


def header(fingerprint: bytes) -> bytes:
    """The 10-byte single-object header for a schema with this fingerprint."""
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError("a CRC-64-AVRO fingerprint is 8 bytes")
    return MAGIC + fingerprint
