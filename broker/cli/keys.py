"""``safeshare keys``: an agency's event-signing keys."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from broker.cli.common import settings


def agency_key_path(agency: str) -> Path:
    """Where an agency's private signing key lives by default."""
    return settings().home / "keys" / "agencies" / f"{agency}.pem"


@click.group()
def keys() -> None:
    """Agency signing keys (Ed25519)."""


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


@keys.command("new-feed")
@click.option("--subscriber", required=True, help="The subscriber whose feed is confidential.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Private key file (default: $SAFESHARE_HOME/keys/subscribers/SUB.pem).",
)
def new_feed(subscriber: str, out: Path | None) -> None:
    """Create a subscriber's X25519 feed key; print its ``encryption_key`` for the policy.

    With the key registered, the router encrypts every copy for that subscriber
    (X25519 + HKDF-SHA256 + AES-256-GCM); `safeshare feed tail` decrypts it.
    """
    from broker.signing.feeds import new_key, save_private  # noqa: PLC0415
    from broker.topics import check_id  # noqa: PLC0415

    check_id("subscriber", subscriber)
    path = out or settings().home / "keys" / "subscribers" / f"{subscriber}.pem"
    if path.exists():
        raise click.ClickException(f"{path} exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    key, public = new_key()
    save_private(key, path)
    click.echo(f"# private key written to {path}", err=True)
    click.echo(f"# add to subscriber {subscriber!r} in the policy file:")
    click.echo(f"encryption_key: {public}")
