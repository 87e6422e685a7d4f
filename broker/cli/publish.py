"""``safeshare publish``: validate JSON events and publish them to an agency's ingest topic."""

from __future__ import annotations

import json
from pathlib import Path

import click

from broker.cli.common import bootstrap_option, read_json_source, resolve_bootstrap, settings
from broker.codec.exceptions import CodecError


@click.command()
@click.option("--agency", required=True, help="Publishing agency id (owner of the ingest topic).")
@click.argument("source", metavar="FILE|-")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Agency signing key (default: $SAFESHARE_HOME/keys/agencies/AGENCY.pem "
              "if it exists; without a key events are sent unsigned).")
@bootstrap_option
def publish(agency: str, source: str, key_file: Path | None, bootstrap: str | None) -> None:
    """Validate the event(s) in FILE (or stdin) and publish them.

    Every event is checked before anything is sent: if one is invalid, the error
    names the event and field, the exit status is non-zero and nothing is sent.
    """
    from broker.api import Publisher, check_source  # noqa: PLC0415 - keep `--help` fast
    from broker.cli.keys import agency_key_path  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.signing import AgencySigner, SignatureError  # noqa: PLC0415

    s = settings()
    codec = Codec.from_dir(s.schemas_dir)
    signer = None
    path = key_file or agency_key_path(agency)
    if key_file is not None or path.exists():
        try:
            signer = AgencySigner.load(agency, path)
        except SignatureError as exc:
            raise click.ClickException(str(exc)) from exc
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
        bootstrap=resolve_bootstrap(bootstrap), agency=agency, codec=codec, topics=s.topics,
        signer=signer,
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
