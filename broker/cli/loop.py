"""``safeshare ack`` and ``safeshare deadlines``: close the loop on a share.

``ack`` writes a subscriber's acknowledgement to its own topic (only that
subscriber's principal may); ``deadlines due|overdue|explain`` read the clock
changelog. Times are printed in UTC ISO 8601 and as milliseconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings
from broker.loop.clocks import ClockState
from broker.loop.rules import ACK_KINDS, RAGS

_OUTCOMES = ("NO_FURTHER_ACTION", "INFORMATION_AND_ADVICE", "EARLY_HELP",
             "CHILD_IN_NEED_ASSESSMENT", "STRATEGY_DISCUSSION", "SECTION_47_ENQUIRY",
             "POLICE_ACTION", "REFERRED_ELSEWHERE", "OTHER")


@click.command()
@click.option("--subscriber", required=True, help="The subscriber acknowledging (yourself).")
@click.option("--event", "event_id", required=True, help="The event id acknowledged.")
@click.option("--kind", required=True, type=click.Choice(ACK_KINDS, case_sensitive=False))
@click.option("--actor", required=True, help="Your staff identifier in the subscriber.")
@click.option("--rag", type=click.Choice(RAGS, case_sensitive=False), default=None,
              help="Triage rating (TRIAGE).")
@click.option("--outcome", type=click.Choice(_OUTCOMES, case_sensitive=False), default=None,
              help="What was decided (DECISION, OUTCOME).")
@click.option("--note", default=None, help="A note kept with your team (never sent on).")
@bootstrap_option
def ack(subscriber: str, event_id: str, kind: str, actor: str, rag: str | None,
        outcome: str | None, note: str | None, bootstrap: str | None) -> None:
    """Acknowledge a share your team received: receipt, triage, decision, outcome."""
    from broker.codec.exceptions import EncodingError  # noqa: PLC0415
    from broker.loop.api import Acknowledger  # noqa: PLC0415

    s = settings()
    with Acknowledger(bootstrap=resolve_bootstrap(bootstrap), subscriber=subscriber,
                      topics=s.topics) as writer:
        try:
            receipt = writer.acknowledge(
                event_id, kind.upper(), actor=actor, rag=rag and rag.upper(),
                outcome=outcome and outcome.upper(), note=note,
            )
        except EncodingError as exc:
            raise click.ClickException(f"refused, nothing sent: {exc}") from None
    click.echo(json.dumps({"ack_id": receipt.ack_id,
                           "at": f"{receipt.topic}[{receipt.partition}]@{receipt.offset}"}))


@click.group()
def deadlines() -> None:
    """Statutory clocks: what is due, what is overdue, and why."""


def _now_ms() -> int:
    from broker.clock import SystemClock  # noqa: PLC0415

    return SystemClock().now_ms()


def _book(bootstrap: str | None) -> Any:
    from broker.loop.api import DeadlineBook  # noqa: PLC0415

    return DeadlineBook.read(bootstrap=resolve_bootstrap(bootstrap), topics=settings().topics)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _row(c: ClockState, now: int) -> dict[str, Any]:
    return {
        "clock": c.clock_id, "kind": c.kind, "event_id": c.event_id, "owner": c.owner,
        "status": c.status.value, "started": _iso(c.started_ms), "due": _iso(c.due_ms),
        "due_in_s": (c.due_ms - now) // 1000, "tiers_escalated": c.tiers_escalated,
        "stopped": _iso(c.stopped_ms), "stopped_by": c.stopped_by,
        "late_by_s": c.late_by_ms // 1000 if c.stopped_ms is not None else None,
    }


@deadlines.command()
@click.option("--within", type=float, default=24.0, show_default=True,
              help="Hours ahead to look.")
@bootstrap_option
def due(within: float, bootstrap: str | None) -> None:
    """Open clocks falling due within the next hours, soonest first (JSON lines)."""
    now = _now_ms()
    for c in _book(bootstrap).due(now, int(within * 3_600_000)):
        click.echo(json.dumps(_row(c, now)))


@deadlines.command()
@bootstrap_option
def overdue(bootstrap: str | None) -> None:
    """Open clocks past their deadline, most overdue first (JSON lines)."""
    now = _now_ms()
    for c in _book(bootstrap).overdue(now):
        click.echo(json.dumps(_row(c, now)))


@deadlines.command()
@click.argument("event_id")
@bootstrap_option
def explain(event_id: str, bootstrap: str | None) -> None:
    """Every clock an event's shares started, with each change it went through."""
    now = _now_ms()
    histories = _book(bootstrap).for_event(event_id)
    if not histories:
        raise click.ClickException(f"no clock was started for event {event_id}")
    for history in histories:
        click.echo(json.dumps({**_row(history[-1], now),
                               "history": [_row(c, now) for c in history]}))
