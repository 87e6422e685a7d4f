"""The gateway's certificates: `safeshare keys ca|client-cert|server-cert` and
reading the principal a client certificate names."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.cli.main import _register, cli
from broker.gateway.pki import CaFiles, CertificateError, Principal, principal_of
from broker.gateway.tokens import OAuthClients, TokenIssuer


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SAFESHARE_HOME", str(tmp_path))
    _register()
    return CliRunner()


def _der(path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_client_certificate_names_one_principal_and_is_signed_by_the_ca(
    run: CliRunner, tmp_path: Path
) -> None:
    assert run.invoke(cli, ["keys", "ca"]).exit_code == 0
    again = run.invoke(cli, ["keys", "ca"])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    r = run.invoke(cli, ["keys", "client-cert", "--agency", "example-academy"])
    assert r.exit_code == 0, r.output
    cert_path = tmp_path / "gateway" / "clients" / "agency-example-academy.pem"
    assert principal_of(_der(cert_path)) == Principal("agency", "example-academy")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(CaFiles(tmp_path / "gateway" / "ca").cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert_path.with_suffix(".key").stat().st_mode & 0o077 == 0
    both = run.invoke(cli, ["keys", "client-cert", "--agency", "a", "--subscriber", "b"])
    assert both.exit_code == 2 and "exactly one" in both.output
    bad = run.invoke(cli, ["keys", "client-cert", "--subscriber", "Not An Id"])
    assert bad.exit_code == 1


def test_a_certificate_without_a_safeshare_principal_names_none(
    run: CliRunner, tmp_path: Path
) -> None:
    assert run.invoke(cli, ["keys", "ca"]).exit_code == 0
    assert run.invoke(cli, ["keys", "server-cert"]).exit_code == 0
    with pytest.raises(CertificateError, match="names 0 principals"):
        principal_of(_der(tmp_path / "gateway" / "server.pem"))
    with pytest.raises(CertificateError, match="kind"):
        Principal.parse("urn:safeshare:root:x")


def test_serve_without_a_ca_is_a_usage_error(run: CliRunner) -> None:
    r = run.invoke(cli, ["gateway", "serve", "--bootstrap", "127.0.0.1:1"])
    assert r.exit_code == 2 and "safeshare keys ca" in r.output


def test_openapi_prints_the_committed_description(run: CliRunner) -> None:
    committed = (Path(__file__).parent.parent / "docs" / "openapi.json").read_text()
    assert run.invoke(cli, ["gateway", "openapi"]).output == committed


def test_a_bearer_token_is_refused_when_expired_tampered_or_from_another_gateway() -> None:
    issuer = TokenIssuer(ttl_s=60)
    who = Principal("subscriber", "torbay-mash")
    token = issuer.issue(who, now=1000.0)
    assert issuer.verify(token, now=1059.0) == who
    assert issuer.verify(token, now=1061.0) is None
    v, claims, mac = token.split(".")
    other = TokenIssuer().issue(Principal("agency", "x"), now=1000.0).split(".")[1]
    assert issuer.verify(f"{v}.{other}.{mac}", now=1001.0) is None
    assert TokenIssuer().verify(token, now=1001.0) is None
    assert issuer.verify("not a token") is None


def test_oauth_client_registration_prints_the_secret_once(run: CliRunner, tmp_path: Path) -> None:
    r = run.invoke(cli, ["keys", "oauth-client", "--agency", "example-academy"])
    assert r.exit_code == 0, r.output
    lines = dict(x.split("=", 1) for x in r.stdout.splitlines() if "=" in x)
    clients = OAuthClients.load(tmp_path / "gateway" / "oauth-clients.json")
    assert clients.authenticate(lines["client_id"], lines["client_secret"]) == Principal(
        "agency", "example-academy")
    assert lines["client_secret"] not in (tmp_path / "gateway" / "oauth-clients.json").read_text()
