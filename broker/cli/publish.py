"""``safeshare publish``: validate JSON events and publish them to an agency's ingest topic."""

from __future__ import annotations

import json

import click

from broker.cli.common import bootstrap_option, read_json_source, resolve_bootstrap, settings
from broker.codec.exceptions import CodecError


@click.command()
@click.option("--agency", required=True, help="Publishing agency id (owner of the ingest topic).")
@click.argument("source", metavar="FILE|-")
@bootstrap_option
def publish(agency: str, source: str, bootstrap: str | None) -> None:
    """Validate the event(s) in FILE (or stdin) and publish them.

    Every event is checked before anything is sent: if one is invalid, the error
    names the event and field, the exit status is non-zero and nothing is sent.
    """
    from broker.api import Publisher, check_source  # noqa: PLC0415 - keep `--help` fast
    from broker.codec import Codec  # noqa: PLC0415

    s = settings()
    codec = Codec.from_dir(s.schemas_dir)
    events = read_json_source(source)
    encoded = []
    for n, obj in enumerate(events, 1):
        where = f"event {n}" if len(events) > 1 else "event"
        try:
            record = codec.from_json(obj)
            check_source(record, agency)
            codec.validate(record)
        except CodecError as exc:
            raise click.ClickException(f"{where}: {exc}; nothing was sent") from exc
        encoded.append(record)
    with Publisher(
        bootstrap=resolve_bootstrap(bootstrap), agency=agency, codec=codec, topics=s.topics
    ) as pub:
        for record in encoded:
            r = pub.publish(record)
            click.echo(
                json.dumps(
                    {
                        "event_id": r.event_id,
                        "topic": r.topic,
                        "partition": r.partition,
                        "offset": r.offset,
                    }
                )
            )
