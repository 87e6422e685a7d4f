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
