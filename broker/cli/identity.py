"""``safeshare identity``: the partnership pseudonym and its keys, and the MASH's desk.

Register in ``broker/cli/main.py`` as ``("broker.cli.identity", "identity")``.
``pseudonym`` and ``rotate-key`` run where the router's partnership keys are
(they never leave that host). ``review``, ``link``, ``unlink``, ``keep-apart`` and ``show`` are
a deciding subscriber's (broker.identity.desk, docs/IDENTITY.md): they see only
pseudonyms.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import click

from broker.cli.common import bootstrap_option

if TYPE_CHECKING:
    from broker.identity.desk import IdentityDesk


@click.group(name="identity")
def identity() -> None:
    """The partnership pseudonym (derive one, rotate the key); review, link, unlink."""


_SUBSCRIBER = click.option("--subscriber", required=True,
                           help="The deciding subscriber (its own topics; e.g. torbay-mash).")
_BY = click.option("--by", "decided_by", required=True,
                   help="Name of the person deciding (the audit keeps a keyed digest only).")
_REVIEW = click.option("--review", "review_id", default=None,
                       help="The review item this decision answers.")


@contextmanager
def _desk(subscriber: str, bootstrap: str | None) -> Iterator[IdentityDesk]:
    from broker.cli.common import resolve_bootstrap, settings  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.identity.desk import IdentityDesk  # noqa: PLC0415
    from broker.topics import check_id  # noqa: PLC0415

    try:
        check_id("subscriber", subscriber)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--subscriber") from None
    s = settings()
    with IdentityDesk(bootstrap=resolve_bootstrap(bootstrap), subscriber=subscriber,
                      codec=Codec.from_dir(s.schemas_dir), topics=s.topics) as desk:
        yield desk


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v),
                      sort_keys=True)


@identity.command("review")
@_SUBSCRIBER
@click.option("--all", "show_all", is_flag=True, help="Also items already decided.")
@bootstrap_option
def review(subscriber: str, show_all: bool, bootstrap: str | None) -> None:
    """Open review items: events routed under a provisional pseudonym (one JSON line each)."""
    with _desk(subscriber, bootstrap) as desk:
        items = desk.items() if show_all else desk.reviews()
    for item in items:
        click.echo(_line(item))
    if not items:
        click.echo("no open review items", err=True)


def _decision_command(action: Literal["link", "unlink", "keep-apart"], doc: str) -> click.Command:
    """``safeshare identity link|unlink|keep-apart``: the same arguments and options,
    one desk call."""

    @identity.command(action, help=doc)
    @click.argument("pseudonym")
    @click.argument("other")
    @_SUBSCRIBER
    @_BY
    @_REVIEW
    @bootstrap_option
    def command(pseudonym: str, other: str, subscriber: str, decided_by: str,
                review_id: str | None, bootstrap: str | None) -> None:
        with _desk(subscriber, bootstrap) as desk:
            decide = {"link": desk.link, "unlink": desk.unlink,
                      "keep-apart": desk.keep_apart}[action]
            decision = decide(pseudonym, other, decided_by=decided_by, review_id=review_id)
        click.echo(f"{action} {decision} sent to {desk.decisions_topic}")

    return command


link = _decision_command(
    "link", "OTHER is the same child as PSEUDONYM (kept): the router merges them.")
unlink = _decision_command(
    "unlink", "OTHER was wrongly linked into PSEUDONYM: the router splits it out again.")
keep_apart = _decision_command(
    "keep-apart", "OTHER (a review's provisional child) is not PSEUDONYM (its candidate):"
    " two children; the review is answered.")


@identity.command("show")
@click.argument("pseudonym")
@_SUBSCRIBER
@bootstrap_option
def show(pseudonym: str, subscriber: str, bootstrap: str | None) -> None:
    """Review items and decisions naming PSEUDONYM (one JSON line each)."""
    with _desk(subscriber, bootstrap) as desk:
        found = desk.show(pseudonym)
    for kind, rows in found.items():
        for row in rows:
            click.echo(_line({"kind": kind[:-1], **row}))


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
