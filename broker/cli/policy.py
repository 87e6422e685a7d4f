"""``safeshare policy``: check a policy file; explain one decision in plain words."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from broker.clock import SystemClock


def _codec() -> Any:
    from broker.codec import Codec  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415

    return Codec.default()


def _default_policy_path() -> str:
    from broker import config  # noqa: PLC0415
    from broker.errors import ConfigError  # noqa: PLC0415

    try:
        return str(config.load().policy_file())
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (or give --policy)") from exc


def _parse_now(value: str | None) -> int:
    if value is None:
        return SystemClock().now_ms()
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-01-01T09:30:00Z)", param_hint="--now"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=what) from exc
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})", param_hint=what
        ) from exc


@click.group(name="policy")
def policy() -> None:
    """Check the sharing policy file and explain its decisions."""


@policy.command(name="check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Check FILE; list every problem as FILE:LINE:COLUMN: message (exit status 1 if any).

    Reports typos and unknown keys, unknown roles, data classes, agencies,
    subscribers, purposes and local authorities, duplicate ids, rules that
    can never apply because an earlier rule matches everything they match, and
    a missing or wrong ``consent`` section (who may record consent).
    """
    from broker.policy import Policy, PolicyError  # noqa: PLC0415

    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"{file}:1:1: cannot read policy file: {exc}")
        raise SystemExit(1) from exc
    try:
        loaded, problems = Policy.check_text(text, source=file)
    except PolicyError as exc:  # the schema vocabulary itself could not be had
        for p in exc.problems:
            click.echo(p.format(exc.source))
        raise SystemExit(1) from exc
    if loaded is None:
        for p in problems:
            click.echo(p.format(file))
        noun = "problem" if len(problems) == 1 else "problems"
        click.echo(f"{file}: {len(problems)} {noun}; the router will refuse this policy", err=True)
        raise SystemExit(1)
    click.echo(
        f"{file}: OK — {loaded.name!r}, sha256 {loaded.digest};"
        f" {len(loaded.agencies)} agencies, {len(loaded.subscribers)} subscribers,"
        f" {len(loaded.rules)} rules"
    )
    for r in loaded.consent_recorders:
        click.echo(
            f"  consent recorder {r.id}: {', '.join(sorted(r.agencies))} for"
            f" {', '.join(sorted(r.purposes)) or 'no purpose'}"
            + ("; may withdraw others' records" if r.withdraw_others else "")
        )
    if not loaded.consent_recorders:
        click.echo("  no agency may record consent (consent.recorders is empty)")


@policy.command(name="explain")
@click.option("--event", "event_file", required=True, help="The event, as a JSON ConcernEvent.")
@click.option("--subscriber", required=True, help="Subscriber id to decide for.")
@click.option(
    "--policy",
    "policy_file",
    default=None,
    help="Policy file (default: $SAFESHARE_POLICY; in a checkout, the example policy).",
)
@click.option(
    "--consent",
    "consent_files",
    multiple=True,
    help="A consent record (JSON ConcernEvent with a ConsentRecord payload); repeat in topic"
    " order, later records replace earlier ones for the same child and purpose.",
)
@click.option(
    "--now", default=None, help="Decision time, ISO 8601 (default: now). UTC if no offset."
)
def explain_cmd(
    event_file: str,
    subscriber: str,
    policy_file: str | None,
    consent_files: tuple[str, ...],
    now: str | None,
) -> None:
    """Print the decision for one event and subscriber, and the rule that produced it."""
    from broker.codec.exceptions import CodecError  # noqa: PLC0415
    from broker.policy import ConsentStore, Policy, PolicyError, explain  # noqa: PLC0415

    now_ms = _parse_now(now)
    path = policy_file or _default_policy_path()
    try:
        loaded = Policy.load(path)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc
    codec = _codec()
    try:
        event = codec.from_json(_read_json(event_file, "--event"))
    except CodecError as exc:
        raise click.ClickException(f"{event_file}: not a valid ConcernEvent: {exc}") from exc
    store = ConsentStore()
    for cf in consent_files:
        try:
            store.apply(codec.from_json(_read_json(cf, "--consent")))
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            raise click.ClickException(f"{cf}: not a valid consent record: {exc}") from exc
    decision = loaded.decide(event, subscriber, store, now_ms)
    click.echo(explain(decision, loaded), nl=False)


__all__ = ["policy"]
