"""Certificate making shared by the gateway's partnership CA (broker/gateway/pki.py)
and the local broker's TLS (broker/kafka/security.py): ECDSA P-256 keys, a CA,
leaves signed by it, PEM and 0600 files. ``cryptography`` only.

Every certificate is valid from five minutes before ``now`` (clock skew), is
signed with SHA-256, and carries the extensions RFC 5280 asks for: a CA has
basicConstraints CA (path length 0), keyCertSign + cRLSign and its subject key
id; a leaf has basicConstraints not-CA, digitalSignature (ECDHE-ECDSA needs no
other usage), its subject alternative names, extended key usages and the
issuer's key id.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ca_certificate", "cert_pem", "host_names", "key_pem", "leaf_certificate",
           "new_key", "write_private"]

_SKEW = dt.timedelta(minutes=5)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (what Kafka's PEM keystore and uvicorn read)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names for server hosts: an IP address as one, else a DNS name."""
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def ca_certificate(key: ec.EllipticCurvePrivateKey, name: x509.Name, now: dt.datetime,
                   valid_for: dt.timedelta) -> x509.Certificate:
    """A self-signed CA certificate that signs leaves only (path length 0)."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def leaf_certificate(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey, cn: str, sans: Sequence[x509.GeneralName],
    usages: Sequence[x509.ObjectIdentifier], now: dt.datetime, valid_for: dt.timedelta,
) -> x509.Certificate:
    """A certificate for ``key`` named ``cn`` and ``sans``, signed by the CA."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (atomic rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
