"""Who a Kafka client is, and the local secrets that prove it.

Three things live here, so that security settings exist in one place only:

* :class:`Credentials`: how one client authenticates (security protocol, SASL
  mechanism, user name and password, CA file, optional client certificate),
  turned into kafka-python settings by :meth:`Credentials.client_config`.
  Every wrapper in :mod:`broker.kafka` takes ``credentials=``; when
  none is given it uses :func:`ambient`, built from the environment by
  :mod:`broker.config` (``SAFESHARE_SECURITY_PROTOCOL``,
  ``SAFESHARE_SASL_USERNAME``, ``SAFESHARE_SASL_PASSWORD_FILE``,
  ``SAFESHARE_SSL_CAFILE`` ...). With none of them set that is PLAINTEXT, which
  adds nothing to a client's settings, so code written for the plaintext test
  broker runs unchanged.
* :func:`ensure_local_tls`: the project's own certificate authority and the
  local broker's certificate, generated with ``cryptography`` for
  127.0.0.1/localhost. Kafka reads them as PEM key/trust stores
  (``ssl.keystore.type=PEM``, KIP-651).
* :class:`PasswordStore`: one random SCRAM password per principal, one file
  each (mode 0600, directory 0700); :func:`scram_add_argument` creates the
  first ones when the local broker's storage is formatted.

Everything secret stays under ``Settings.home`` (``var/``, gitignored); no
key or password is ever committed or passed on a command line.

Principal names (Kafka's ``User:<name>``) follow one convention, which the
ACLs in :mod:`broker.kafka.acl` are derived from: ``agency-<id>``,
``subscriber-<id>``, ``router``, ``checkpointer``, ``witness``, ``auditor``,
``operator``; ``admin`` and ``broker`` are the local broker's super users.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker import config
from broker.errors import ConfigError

__all__ = [
    "ADMIN_USER",
    "BROKER_CN",
    "BROKER_USER",
    "PLAINTEXT",
    "SCRAM_MECHANISM",
    "Credentials",
    "LocalTls",
    "PasswordStore",
    "ambient",
    "ensure_local_tls",
    "from_settings",
    "resolve",
    "scram_add_argument",
]

SCRAM_MECHANISM = "SCRAM-SHA-512"
# Kafka accepts 4096..16384 for SCRAM-SHA-512 (ScramMechanism.minIterations/maxIterations).
SCRAM_ITERATIONS = 8192
ADMIN_USER = "admin"
"""The operator's principal: a super user, used to create users and apply ACLs."""
BROKER_USER = "broker"
"""The broker's own principal on its SASL_SSL listener (inter-broker traffic)."""
BROKER_CN = "safeshare-local-broker"
"""Subject CN of the local broker's certificate; ``User:CN=<it>`` on the controller listener."""

PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
SASL_MECHANISMS = frozenset({"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"})


@dataclass(frozen=True)
class Credentials:
    """How one Kafka client proves who it is (and checks who the broker is).

    The password never appears in ``repr`` (it is left out), so a credentials
    value may be logged.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    """PEM file of the CA(s) the broker's certificate must chain to (None: system CAs)."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS; with ``ssl_keyfile``."""
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise ConfigError(f"unknown security protocol {self.security_protocol!r}")
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"{self.security_protocol} needs a SASL mechanism "
                    f"({', '.join(sorted(SASL_MECHANISMS))}), not {self.sasl_mechanism!r}"
                )
            if not self.username or self.password is None:
                raise ConfigError(f"{self.security_protocol} needs a user name and a password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("a client certificate needs both its certificate and its key file")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in {"SSL", "SASL_SSL"}

    @property
    def principal(self) -> str | None:
        """``User:<name>`` as Kafka's authorizer sees a SASL client, else None."""
        return f"User:{self.username}" if self.sasl and self.username else None

    def as_user(self, username: str, password: str) -> Credentials:
        """The same connection settings for another SASL user."""
        return replace(self, username=username, password=password)

    def client_config(self) -> dict[str, Any]:
        """kafka-python settings (for KafkaProducer, KafkaConsumer, KafkaAdminClient).

        PLAINTEXT gives ``{}``: the library's default, so a caller's own
        ``security_protocol`` override (if any) still decides.
        """
        if self.security_protocol == "PLAINTEXT":
            return {}
        cfg: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.username
            cfg["sasl_plain_password"] = self.password
        if self.tls:
            cfg["ssl_check_hostname"] = True
            if self.ssl_cafile is not None:
                cfg["ssl_cafile"] = str(self.ssl_cafile)
            if self.ssl_certfile is not None:
                cfg["ssl_certfile"] = str(self.ssl_certfile)
                cfg["ssl_keyfile"] = str(self.ssl_keyfile)
        return cfg


PLAINTEXT = Credentials()
"""No authentication, no encryption: the default test broker."""


def from_settings(settings: config.Settings) -> Credentials:
    """The credentials the environment configures (see :mod:`broker.config`).

    The password is read from ``settings.sasl_password_file``, never from an
    environment variable, so it does not leak into ``ps e`` or crash dumps.
    """
    password: str | None = None
    if settings.sasl_password_file is not None:
        try:
            password = settings.sasl_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"SAFESHARE_SASL_PASSWORD_FILE: cannot read {settings.sasl_password_file}: "
                f"{exc.strerror or exc}"
            ) from exc
        if not password:
            raise ConfigError(
                f"SAFESHARE_SASL_PASSWORD_FILE: {settings.sasl_password_file} is empty"
            )
    sasl = settings.security_protocol.startswith("SASL_")
    return Credentials(
        security_protocol=settings.security_protocol,
        sasl_mechanism=settings.sasl_mechanism if sasl else None,
        username=settings.sasl_username if sasl else None,
        password=password if sasl else None,
        ssl_cafile=settings.ssl_cafile,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
    )


def ambient() -> Credentials:
    """The credentials of this process, from its environment."""
    return from_settings(config.load())


def resolve(credentials: Credentials | None) -> Credentials:
    """``credentials`` if given, else :func:`ambient`."""
    return ambient() if credentials is None else credentials


# -- files with secrets ------------------------------------------------------------------
def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600, atomic) in a 0700 directory."""
    from broker._x509 import write_private  # noqa: PLC0415 - cryptography loads on use

    _private_dir(path.parent)
    write_private(path, data)


# -- local certificate authority ------------------------------------------------------------
@dataclass(frozen=True)
class LocalTls:
    """Where the local CA and broker certificate live (all PEM, mode 0600)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The trust anchor clients give as ``ssl_cafile`` (and the broker's truststore)."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def broker_keystore(self) -> Path:
        """Kafka PEM keystore: the broker's unencrypted PKCS#8 key, then its chain."""
        return self.directory / "broker-keystore.pem"


# A local broker's certificate is renewed when less than this much validity is left.
_RENEW_BEFORE = _dt.timedelta(days=30)
_CA_VALIDITY = _dt.timedelta(days=3650)
_LEAF_VALIDITY = _dt.timedelta(days=825)


def ensure_local_tls(
    directory: Path,
    *,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    now: _dt.datetime | None = None,
) -> LocalTls:
    """Create (once) a CA and a broker certificate for ``hosts`` under ``directory``.

    Idempotent: existing files are kept while the broker certificate is
    signed by the CA on disk, names every host and stays valid for 30 more
    days; otherwise the broker certificate (and, if the CA itself is missing
    or expiring, the CA) is made anew. Keys are ECDSA P-256.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from broker._x509 import (
        ca_certificate,
        cert_pem,
        host_names,
        key_pem,
        leaf_certificate,
        new_key,
    )

    tls = LocalTls(_private_dir(Path(directory)))
    now = now or _dt.datetime.now(_dt.UTC)
    hosts = tuple(hosts)

    def fresh(cert: x509.Certificate) -> bool:
        return cert.not_valid_after_utc - now > _RENEW_BEFORE and cert.not_valid_before_utc <= now

    ca_cert: x509.Certificate | None = None
    ca_key: Any = None
    try:
        ca_cert = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(tls.ca_key.read_bytes(), password=None)
        if not fresh(ca_cert):
            ca_cert = None
    except (OSError, ValueError):
        ca_cert = None
    if ca_cert is None:
        ca_key = new_key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Safeshare local"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Safeshare local CA"),
        ])
        ca_cert = ca_certificate(ca_key, name, now, _CA_VALIDITY)
        _write_private(tls.ca_key, key_pem(ca_key))
        _write_private(tls.ca_cert, cert_pem(ca_cert))
        with_new_ca = True
    else:
        with_new_ca = False

    if not with_new_ca and _broker_cert_ok(tls, ca_cert, hosts, fresh):
        return tls

    key = new_key()
    # The broker is a TLS server to clients and a TLS client on its own
    # controller listener (mutual TLS there), so it needs both usages.
    cert = leaf_certificate(
        ca_cert, ca_key, key, BROKER_CN, host_names(hosts),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], now, _LEAF_VALIDITY,
    )
    chain = cert_pem(cert) + cert_pem(ca_cert)
    _write_private(tls.broker_keystore, key_pem(key) + chain)
    _write_private(tls.broker_cert, cert_pem(cert))
    return tls


def _broker_cert_ok(tls: LocalTls, ca_cert: Any, hosts: tuple[str, ...], fresh: Any) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(tls.broker_cert.read_bytes())
        if not tls.broker_keystore.is_file():
            return False
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    except Exception:  # noqa: BLE001 - InvalidSignature: not signed by this CA
        return False
    names = {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    names |= set(san.get_values_for_type(x509.DNSName))
    return bool(fresh(cert)) and all(
        str(ipaddress.ip_address(h)) in names if _is_ip(h) else h in names for h in hosts
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- SCRAM passwords ----------------------------------------------------------------------------
class PasswordStore:
    """One random password per SASL user, each in ``<directory>/<user>.password`` (0600).

    The passwords of a local broker's principals; a real deployment issues its
    own and hands each service only its own password file.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, user: str) -> Path:
        if not user or "/" in user or user.startswith("."):
            raise ValueError(f"not a user name for a password file: {user!r}")
        return self.directory / f"{user}.password"

    def get(self, user: str) -> str | None:
        try:
            return self.path(user).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def ensure(self, user: str) -> str:
        """The user's password, created (random, 256 bits) if it has none yet."""
        existing = self.get(user)
        if existing is not None:
            return existing
        password = secrets.token_urlsafe(32)
        _write_private(self.path(user), (password + "\n").encode())
        return password

    def users(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(".password")] for p in self.directory.glob("*.password"))


def scram_add_argument(
    user: str, password: str, *, iterations: int = SCRAM_ITERATIONS,
    mechanism: str = SCRAM_MECHANISM,
) -> str:
    """The value of ``kafka-storage format --add-scram`` that creates ``user``.

    It holds the password (a salted password would do no better: in SCRAM it
    is enough to log in with), so it must reach the format tool through a
    0600 argument file, never on a command line that ``ps`` shows.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", user) or not re.fullmatch(r"[A-Za-z0-9_-]+", password):
        raise ValueError("SCRAM user names and passwords here are URL-safe tokens")
    return f"{mechanism}=[name={user},password={password},iterations={iterations}]"
