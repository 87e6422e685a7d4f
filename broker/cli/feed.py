"""``safeshare feed tail``: decode and print a subscriber's feed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings


@click.group()
def feed() -> None:
    """Read a subscriber's feed."""


@feed.command()
@click.option("--subscriber", required=True, help="Subscriber id whose feed to read.")
@click.option("--follow/--no-follow", default=False, help="Keep waiting for new events.")
@click.option(
    "--idle",
    type=float,
    default=3.0,
    show_default=True,
    help="Without --follow, stop after this many seconds with nothing new.",
)
@click.option("--group", default=None, help="Consumer group (default: the subscriber's own).")
@click.option(
    "--commit/--no-commit",
    default=False,
    help="Record the position in the subscriber's group (default: just look).",
)
@click.option(
    "--keyring",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Subscriber feed keyring for a confidential feed "
    "(default: $SAFESHARE_HOME/keys/subscribers/SUBSCRIBER.json if it exists).",
)
@bootstrap_option
def tail(
    subscriber: str,
    follow: bool,
    idle: float,
    group: str | None,
    commit: bool,
    key_file: Path | None,
    bootstrap: str | None,
) -> None:
    """Print the subscriber's events, one JSON object per line.

    A line {"at": ..., "identity_notice": {...}} says a person linked two of the
    feed's children as one (LINK) or split them again (UNLINK)."""
    from broker.api import FeedReader  # noqa: PLC0415
    from broker.cli.keys import feed_keyring_path  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.errors import SafeshareError  # noqa: PLC0415
    from broker.signing.feedkeys import FeedKeyring  # noqa: PLC0415

    s = settings()
    codec = Codec.from_dir(s.schemas_dir)
    path = key_file or feed_keyring_path(subscriber)
    try:
        ring = FeedKeyring.load(path) if key_file is not None or path.exists() else None
    except SafeshareError as exc:
        raise click.ClickException(str(exc)) from None
    if ring is not None and ring.subscriber != subscriber:
        raise click.ClickException(f"{path} is the feed keyring of {ring.subscriber!r}")
    group_id = group or (
        None if commit else f"{s.topics.feed_group(subscriber)}.tail.{time.time_ns()}"
    )
    with FeedReader(
        bootstrap=resolve_bootstrap(bootstrap),
        subscriber=subscriber,
        codec=codec,
        topics=s.topics,
        group_id=group_id,
        keyring=ring,
    ) as reader:
        last = time.monotonic()
        while True:
            try:
                items = reader.poll(timeout_ms=500)
            except SafeshareError as exc:
                raise click.ClickException(str(exc)) from None
            for item in items:
                shown = codec.to_json(item.record, item.schema)
                sealed = {"sealed_with": item.sealed_with} if item.sealed_with else {}
                if item.is_identity_notice:  # a line of its own kind, not an event
                    shown = {"identity_notice": shown}
                click.echo(json.dumps({"at": item.where, **sealed, **shown}))
            if items:
                last = time.monotonic()
                if commit:
                    reader.commit()
            elif not follow and time.monotonic() - last > idle:
                break
