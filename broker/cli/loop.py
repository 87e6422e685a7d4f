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


@click.group("loop")
def loop_group() -> None:
    """The loop service: statutory clocks, escalations and status notices."""


@loop_group.command("serve")
@click.option("--instance", default="loop-0", show_default=True,
              help="Instance id (transactional id suffix); unique per running process.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--metrics-port", type=int, default=9309, show_default=True,
              help="Port for /metrics and /healthz (0: any free port).")
@bootstrap_option
def loop_serve(instance: str, metrics_host: str, metrics_port: int,
               bootstrap: str | None) -> None:
    """Run the loop service until SIGTERM: clocks from the router's shares, stopped by
    acknowledgements, escalated to the policy's escalate_to when overdue."""
    import signal  # noqa: PLC0415

    from broker.clock import SystemClock  # noqa: PLC0415
    from broker.codec import Codec  # noqa: PLC0415
    from broker.loop.service import LoopService  # noqa: PLC0415
    from broker.policy import Policy  # noqa: PLC0415
    from broker.routing.metrics import HealthServer  # noqa: PLC0415

    s = settings()
    codec = Codec.from_dir(s.schemas_dir)
    policy = Policy.load(s.policy_file(), field_classes=codec.data_classes())
    service = LoopService(resolve_bootstrap(bootstrap), topics=s.topics, codec=codec,
                          policy=policy.clocks, clock=SystemClock(), instance_id=instance)
    server = HealthServer(service.metrics, service.health, host=metrics_host,
                          port=metrics_port).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    click.echo(f"loop service {instance}: metrics on http://{metrics_host}:{server.port}/metrics",
               err=True)
    try:
        service.run()
    finally:
        service.close()
        server.close()
