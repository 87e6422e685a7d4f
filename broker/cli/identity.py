"""``safeshare identity``: the partnership pseudonym and its keys (docs/IDENTITY.md).

Register in ``broker/cli/main.py`` as ``("broker.cli.identity", "identity")``.
Runs where the router's partnership keys are (they never leave that host).
"""

from __future__ import annotations

import click


@click.group(name="identity")
def identity() -> None:
    """The partnership pseudonym: derive one, rotate the key."""


@identity.command("pseudonym")
@click.option("--nhs-number", required=True,
              help="The child's NHS number (spaces and hyphens allowed).")
@click.option("--all-versions", is_flag=True,
              help="One line per key version held (pseudonyms made before a rotation).")
def pseudonym(nhs_number: str, all_versions: bool) -> None:
    """The child's partnership pseudonym, e.g. for ``audit who-saw --subject``.

    The number is checked (modulus 11) and never printed back.
    """
    from broker.cli.common import settings  # noqa: PLC0415 - keep `--help` fast
    from broker.identity.exceptions import IdentityError  # noqa: PLC0415
    from broker.identity.nhs import canonical_nhs_number, nhs_problem  # noqa: PLC0415
    from broker.identity.pseudonym import PartnershipKeys  # noqa: PLC0415

    number = canonical_nhs_number(nhs_number)
    problem = nhs_problem(number)
    if problem is not None:
        raise click.ClickException(f"--nhs-number: {problem}")
    try:
        keys = PartnershipKeys.load(settings().partnership_keys_dir)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    if all_versions:
        for _, p in keys.every_version("nhs", number).items():
            click.echo(p)
    else:
        click.echo(keys.of_nhs_number(number))


@identity.command("rotate-key")
def rotate_key() -> None:
    """Add the next partnership key version and make it current (docs/IDENTITY.md)."""
    from broker.cli.common import settings  # noqa: PLC0415
    from broker.identity.exceptions import IdentityError  # noqa: PLC0415
    from broker.identity.pseudonym import PartnershipKeys  # noqa: PLC0415

    directory = settings().partnership_keys_dir
    try:
        keys = PartnershipKeys.rotate(directory)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"partnership key v{keys.current} created in {directory}; older versions kept")
