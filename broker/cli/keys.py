"""``safeshare keys``: an agency's event-signing keys."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
import yaml

from broker.cli.common import settings


def agency_key_path(agency: str) -> Path:
    """Where an agency's private signing key lives by default."""
    return settings().keys_dir / "agencies" / f"{agency}.pem"


@click.group()
def keys() -> None:
    """Agency signing keys (Ed25519) and subscriber feed keys (HPKE)."""


@keys.command("new")
@click.option("--agency", required=True, help="The agency id the key signs for.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Private key file (default: $SAFESHARE_HOME/keys/agencies/AGENCY.pem).",
)
def new(agency: str, out: Path | None) -> None:
    """Create an agency signing key; print the entry to add to the policy's registry.

    The private key stays with the agency (mode 0600, never printed); the printed
    public entry goes under the agency's ``keys:`` in the policy. To rotate, add
    the new entry and give the old one a ``not_after`` time: both verify until then.
    """
    from broker.signing import AgencySigner  # noqa: PLC0415
    from broker.topics import check_id  # noqa: PLC0415

    check_id("agency", agency)
    path = out or agency_key_path(agency)
    if path.exists():
        raise click.ClickException(f"{path} exists; refusing to overwrite a signing key")
    signer = AgencySigner.generate(agency)
    signer.save(path)
    click.echo(f"# private key written to {path}", err=True)
    click.echo(f"# add under agency {agency!r} -> keys: in the policy file")
    click.echo(yaml.safe_dump([signer.registry_entry()], sort_keys=False).rstrip())


def feed_keyring_path(subscriber: str) -> Path:
    """Where a subscriber's feed keyring (its private feed keys) lives by default."""
    from broker.signing.feedkeys import keyring_path  # noqa: PLC0415

    return keyring_path(settings().home, subscriber)


@keys.command("new-feed")
@click.option("--subscriber", required=True, help="The subscriber whose feed is confidential.")
@click.option(
    "--kem",
    type=click.Choice(["MLKEM768-X25519", "DHKEM-X25519"], case_sensitive=False),
    default="MLKEM768-X25519",
    show_default=True,
    help="HPKE KEM: the post-quantum hybrid X-Wing, or classical X25519 only.",
)
@click.option(
    "--not-before",
    default=None,
    help="ISO-8601 time from which the router seals to the new key (rotation); "
    "default: as soon as the policy lists it.",
)
@click.option(
    "--keyring",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keyring file (default: $SAFESHARE_HOME/keys/subscribers/SUB.json).",
)
def new_feed(subscriber: str, kem: str, not_before: str | None, out: Path | None) -> None:
    """Add an HPKE feed key to a subscriber's keyring; print its ``feed_keys`` entry.

    With a key listed under the subscriber's ``feed_keys:`` in the policy, the
    router seals every copy for it (HPKE, RFC 9180; safeshare.EncryptedFeedRecord)
    and `safeshare feed tail` opens it with the keyring. Rotation: run this
    again (the keyring keeps the old key, so old records stay readable), add
    the printed entry, and give the old entry a ``not_after``.
    """
    from broker.signing.feedkeys import FeedKeyring  # noqa: PLC0415
    from broker.signing.feeds import FeedKeyError  # noqa: PLC0415
    from broker.topics import check_id  # noqa: PLC0415

    check_id("subscriber", subscriber)
    if not_before is not None:
        try:
            datetime.fromisoformat(not_before.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                f"{not_before!r} is not an ISO-8601 time (e.g. 2027-01-01T00:00:00Z)",
                param_hint="--not-before",
            ) from None
    path = out or feed_keyring_path(subscriber)
    try:
        ring = FeedKeyring.load(path) if path.exists() else FeedKeyring(subscriber)
    except FeedKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if ring.subscriber != subscriber:
        raise click.ClickException(f"{path} is the keyring of {ring.subscriber!r}")
    key = ring.new_key(kem.upper())
    ring.save(path)
    entry: dict[str, str] = {"id": key.id, "kem": key.kem}
    if not_before:
        entry["not_before"] = not_before
    entry["public_key"] = key.public().public_key_b64
    click.echo(f"# private key added to {path} ({len(ring.keys)} key(s))", err=True)
    click.echo(f"# add under subscriber {subscriber!r} -> feed_keys: in the policy file")
    click.echo(yaml.safe_dump([entry], sort_keys=False, width=1 << 16).rstrip())


# -- the gateway's certificates (broker/gateway/pki.py) ---------------------------------
def _ca_dir(ca_dir: Path | None) -> Path:
    return ca_dir or settings().home / "gateway" / "ca"


_CA_DIR = click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path),
                       default=None, help="CA directory (default: $SAFESHARE_HOME/gateway/ca).")


@keys.command("ca")
@_CA_DIR
def ca(ca_dir: Path | None) -> None:
    """Create the partnership CA that signs the gateway's client certificates."""
    from broker.gateway.pki import CaFiles, CertificateError, make_ca  # noqa: PLC0415

    files = CaFiles(_ca_dir(ca_dir))
    try:
        make_ca(files)
    except CertificateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# CA certificate {files.cert} (key {files.key}, mode 0600)")


@keys.command("client-cert")
@click.option("--agency", default=None, help="The agency the certificate names.")
@click.option("--subscriber", default=None, help="The subscriber the certificate names.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Certificate file (the key goes beside it as .key; default: "
              "$SAFESHARE_HOME/gateway/clients/KIND-ID.pem).")
@_CA_DIR
def client_cert(agency: str | None, subscriber: str | None, out: Path | None,
                ca_dir: Path | None) -> None:
    """Issue a client certificate naming one agency or one subscriber (SAN URI)."""
    from broker.gateway.pki import (  # noqa: PLC0415
        CaFiles,
        CertificateError,
        Principal,
        issue_client,
    )

    if (agency is None) == (subscriber is None):
        raise click.UsageError("give exactly one of --agency and --subscriber")
    principal = Principal("agency", agency) if agency else Principal("subscriber", subscriber or "")
    cert = out or settings().home / "gateway" / "clients" / f"{principal.kind}-{principal.id}.pem"
    try:
        issue_client(CaFiles(_ca_dir(ca_dir)), principal, cert, cert.with_suffix(".key"))
    except (CertificateError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# {principal.uri}: certificate {cert}, key {cert.with_suffix('.key')}")


@keys.command("server-cert")
@click.option("--host", "hosts", multiple=True, default=["127.0.0.1", "localhost"],
              show_default=True, help="Names or addresses the gateway is reached at.")
@_CA_DIR
def server_cert(hosts: tuple[str, ...], ca_dir: Path | None) -> None:
    """Issue the gateway's TLS server certificate ($SAFESHARE_HOME/gateway/server.pem)."""
    from broker.gateway.pki import CaFiles, CertificateError, issue_server  # noqa: PLC0415

    out = settings().home / "gateway" / "server.pem"
    try:
        issue_server(CaFiles(_ca_dir(ca_dir)), list(hosts), out, out.with_suffix(".key"))
    except CertificateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# server certificate {out}")


@keys.command("oauth-client")
@click.option("--agency", default=None, help="The agency the client acts as.")
@click.option("--subscriber", default=None, help="The subscriber the client acts as.")
def oauth_client(agency: str | None, subscriber: str | None) -> None:
    """Register an OAuth2 client of the gateway (client credentials); print its secret once."""
    from broker.gateway.pki import Principal  # noqa: PLC0415
    from broker.gateway.tokens import OAuthClients  # noqa: PLC0415
    from broker.topics import check_id  # noqa: PLC0415

    if (agency is None) == (subscriber is None):
        raise click.UsageError("give exactly one of --agency and --subscriber")
    principal = Principal("agency", agency) if agency else Principal("subscriber", subscriber or "")
    try:
        check_id(principal.kind, principal.id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    path = settings().home / "gateway" / "oauth-clients.json"
    client_id, secret = OAuthClients.register(path, principal)
    click.echo(f"# {principal.uri}: registered in {path}; the secret is not shown again",
               err=True)
    click.echo(f"client_id={client_id}")
    click.echo(f"client_secret={secret}")
