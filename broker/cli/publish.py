"""``safeshare publish``: check JSON events and publish them to an agency's ingest topic.

Exit status:

- 0: every event was published; one receipt (JSON) per event on stdout.
- 1: refused, nothing was sent: the input or an event is not acceptable (one
  line on stderr naming the event, the field or the byte offset, and the limit).
- 2: usage or configuration: a bad option, or a key or policy that cannot be read.
- 3: Kafka failed while sending: the receipts printed are of the events the
  broker acknowledged; the line on stderr says which event was not.

All or nothing per invocation: every event is checked before the first is sent,
so one bad event (or one bad line of JSON lines) means nothing is sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings
from broker.errors import SafeshareError

REFUSED = 1
USAGE = 2
SEND_FAILED = 3


def refuse(message: str) -> NoReturn:
    """Stop with one line and the "refused, nothing sent" status."""
    click.echo(f"Error: {message}; nothing was sent", err=True)
    raise SystemExit(REFUSED)


@click.command()
@click.option("--agency", required=True, help="Publishing agency id (owner of the ingest topic).")
@click.argument("source", metavar="FILE|-")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Agency signing key (default: $SAFESHARE_HOME/keys/agencies/AGENCY.pem "
              "if it exists; without a key events are sent unsigned).")
@bootstrap_option
def publish(agency: str, source: str, key_file: Path | None, bootstrap: str | None) -> None:
    """Check the event(s) in FILE (or stdin: one JSON event, a JSON array, or JSON
    lines) and publish them.

    Every event is checked before anything is sent, against the schema, the
    size limit and the policy the router runs ($SAFESHARE_POLICY, when there is
    one): if one is refused, the error names the event and the field or byte
    offset, the exit status is 1 and nothing is sent. Exit status: 0 published,
    1 refused (nothing sent), 2 usage or configuration, 3 Kafka failed while
    sending.
    """
    from broker.api import Publisher  # noqa: PLC0415 - keep `--help` fast
    from broker.cli.keys import agency_key_path  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.codec.exceptions import CodecError  # noqa: PLC0415
    from broker.intake import Intake  # noqa: PLC0415
    from broker.policy import Policy, PolicyError  # noqa: PLC0415
    from broker.signing import AgencySigner, SignatureError  # noqa: PLC0415

    s = settings()
    codec = Codec.from_dir(s.schemas_dir)
    signer = None
    path = key_file or agency_key_path(agency)
    if key_file is not None or path.exists():
        try:
            signer = AgencySigner.load(agency, path)
        except SignatureError as exc:
            raise click.UsageError(str(exc)) from exc
    policy = None
    if s.policy_path is not None:  # none installed without SAFESHARE_POLICY: the router checks
        try:
            policy = Policy.load(s.policy_path, field_classes=codec.data_classes())
        except PolicyError as exc:
            raise click.UsageError(
                f"cannot check events against the policy {s.policy_path}: {exc}"
            ) from exc
    try:
        intake = Intake(
            agency=agency, codec=codec, signer=signer, policy=policy, time_bounds=s.time_bounds
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    name = "<stdin>" if source == "-" else source
    try:
        checked = intake.encode_all(_read_bytes(source), name)
    except CodecError as exc:
        refuse(str(exc))

    sent = 0
    try:
        with Publisher(
            bootstrap=resolve_bootstrap(bootstrap), agency=agency, topics=s.topics, intake=intake
        ) as pub:
            for record, data in checked:
                r = pub.send(record, data)
                sent += 1
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
    except SafeshareError as exc:
        what = f"event {sent + 1}" if len(checked) > 1 else "event"
        click.echo(
            f"Error: sending {what} failed ({exc}); {sent} of {len(checked)} published", err=True
        )
        raise SystemExit(SEND_FAILED) from None


def _read_bytes(source: str) -> bytes:
    """FILE's bytes, or stdin's for '-', at most MAX_INPUT_BYTES + 1 of them (the
    parser refuses more); a file that cannot be read is refused in one line."""
    from broker.codec.jsontext import MAX_INPUT_BYTES  # noqa: PLC0415

    if source == "-":
        return sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    try:
        with open(source, "rb") as fh:
            return fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        refuse(f"cannot read {source}: {exc.strerror}")
