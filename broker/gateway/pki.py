"""The gateway's certificates: a partnership CA, the server's certificate and
one client certificate per agency or subscriber (``safeshare keys ca|server-cert|client-cert``).

A client certificate names exactly one principal: its subject CN is the id and
its one SAN is the URI ``urn:safeshare:<kind>:<id>`` (kind ``agency`` or
``subscriber``). The gateway trusts that URI only in a certificate its own CA
signed (mutual TLS), so an agency's certificate can act as that agency and no
other. Keys are ECDSA P-256 (small, fast handshakes); certificates are made
by :mod:`broker._x509`, which the local broker's TLS uses too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker._x509 import (
    ca_certificate,
    cert_pem,
    host_names,
    key_pem,
    leaf_certificate,
    new_key,
    write_private,
)
from broker.errors import SafeshareError
from broker.topics import check_id

KINDS = ("agency", "subscriber")
URN = "urn:safeshare:"
CA_DAYS = 3650
LEAF_DAYS = 397


class CertificateError(SafeshareError):
    """A certificate or key file is missing, unreadable or does not name a principal."""


@dataclass(frozen=True)
class Principal:
    """Who a caller is: an agency (publishes) or a subscriber (reads its feed)."""

    kind: str
    id: str

    @property
    def uri(self) -> str:
        return f"{URN}{self.kind}:{self.id}"

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, uri: str) -> Principal:
        """The principal a SAN URI names; raises :class:`CertificateError` if none."""
        if not uri.startswith(URN):
            raise CertificateError(f"SAN URI {uri!r} is not a safeshare principal")
        kind, _, ident = uri[len(URN):].partition(":")
        if kind not in KINDS:
            raise CertificateError(f"SAN URI kind {kind!r} is not one of {', '.join(KINDS)}")
        try:
            check_id(kind, ident)
        except ValueError as exc:
            raise CertificateError(str(exc)) from None
        return cls(kind, ident)


def principal_of(cert_der: bytes) -> Principal:
    """The one principal a (DER) client certificate names in its SAN URIs."""
    cert = x509.load_der_x509_certificate(cert_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("client certificate has no subjectAltName") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(URN)]
    if len(uris) != 1:
        raise CertificateError(f"client certificate names {len(uris)} principals, not one")
    return Principal.parse(uris[0])


@dataclass(frozen=True)
class CaFiles:
    """Where a CA's certificate and private key live (``<dir>/ca.pem``, ``ca.key``)."""

    dir: Path

    @property
    def cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def key(self) -> Path:
        return self.dir / "ca.key"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(files: CaFiles, name: str = "Safeshare partnership gateway CA") -> None:
    """Create a CA (refuses to overwrite one: every certificate it signed depends on it)."""
    if files.key.exists() or files.cert.exists():
        raise CertificateError(f"{files.dir} already holds a CA; refusing to overwrite it")
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = ca_certificate(key, subject, _now(), dt.timedelta(days=CA_DAYS))
    write_private(files.key, key_pem(key))
    files.cert.write_bytes(cert_pem(cert))


def _load_ca(files: CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise CertificateError(f"cannot read the CA in {files.dir}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{files.key} is not an EC private key")
    return cert, key


def _issue(
    files: CaFiles,
    cn: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    cert_out: Path,
    key_out: Path,
) -> None:
    ca_cert, ca_key = _load_ca(files)
    key = new_key()
    cert = leaf_certificate(ca_cert, ca_key, key, cn, sans, [usage], _now(),
                            dt.timedelta(days=LEAF_DAYS))
    write_private(key_out, key_pem(key))
    cert_out.parent.mkdir(parents=True, exist_ok=True)
    cert_out.write_bytes(cert_pem(cert))


def issue_server(files: CaFiles, hosts: list[str], cert_out: Path, key_out: Path) -> None:
    """A TLS server certificate for the gateway, valid for ``hosts`` (names or IPs)."""
    _issue(files, hosts[0] if hosts else "safeshare-gateway", host_names(hosts),
           ExtendedKeyUsageOID.SERVER_AUTH, cert_out, key_out)


def issue_client(files: CaFiles, principal: Principal, cert_out: Path, key_out: Path) -> None:
    """A client certificate naming ``principal`` (CN the id, SAN its URI)."""
    check_id(principal.kind, principal.id)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(principal.uri)]
    _issue(files, principal.id, sans, ExtendedKeyUsageOID.CLIENT_AUTH, cert_out, key_out)
