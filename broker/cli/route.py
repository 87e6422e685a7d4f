"""``safeshare route`` and ``safeshare serve``: run the router."""

from __future__ import annotations

import json
import signal
import socket
from types import FrameType

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings


def _instance_id(given: str | None) -> str:
    # Stable per host by default, so a restarted router fences its own zombie.
    return given or socket.gethostname().split(".")[0].lower() or "router"


@click.command()
@click.option("--instance", default=None, help="Router instance id (transactional id suffix).")
@click.option(
    "--idle",
    type=float,
    default=5.0,
    show_default=True,
    help="Stop after this many seconds with nothing to route (0: never).",
)
@bootstrap_option
def route(instance: str | None, idle: float, bootstrap: str | None) -> None:
    """Route every ingest topic to the subscriber feeds until idle.

    Each batch's shares, quarantines, audit leaves and consumer offsets are
    committed in one Kafka transaction. Prints a JSON summary at the end.
    """
    from broker.clock import SystemClock  # noqa: PLC0415
    from broker.routing.app import build_service, settle_memory  # noqa: PLC0415

    s = settings()
    service = build_service(
        s, resolve_bootstrap(bootstrap), clock=SystemClock(), instance_id=_instance_id(instance)
    )
    settle_memory()
    _stop_on_signals(service.stop)
    stats = service.run(idle_exit_s=idle or None)
    click.echo(
        json.dumps(
            {
                "consumed": stats.consumed,
                "shared": stats.shared,
                "withheld": stats.withheld,
                "quarantined": stats.quarantined,
                "duplicates": stats.duplicates,
                "transactions": stats.transactions,
                "fenced": stats.fenced,
            }
        )
    )
    if stats.fenced:
        _exit_fenced()


@click.command()
@click.option("--instance", default=None, help="Router instance id (transactional id suffix).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--metrics-port",
    type=int,
    default=9308,
    show_default=True,
    help="Port for /metrics and /healthz (0: any free port).",
)
@bootstrap_option
def serve(
    instance: str | None, metrics_host: str, metrics_port: int, bootstrap: str | None
) -> None:
    """Run the router as a long-lived service with /metrics and /healthz.

    While the broker cannot be reached (at start or later) it waits and retries
    with back-off, and /healthz answers 503 saying why and since when.

    \b
    Exit status:
      0  stopped by SIGTERM or SIGINT (an unfinished transaction is abandoned;
         Kafka aborts it, and its batch is routed again by the next router)
      2  could not start: the schemas, policy or keys did not load, or a
         setting is wrong (the message says which)
      3  fenced: another process runs with the same --instance id
      1  an unexpected error (a defect): the open transaction was aborted and
         its batch is routed again by the next router
    """
    from broker.clock import SystemClock  # noqa: PLC0415
    from broker.routing.app import build_service, settle_memory  # noqa: PLC0415

    s = settings()
    service = build_service(
        s,
        resolve_bootstrap(bootstrap),
        clock=SystemClock(),
        instance_id=_instance_id(instance),
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        wait_for_broker=True,
    )
    settle_memory()
    _stop_on_signals(service.stop)
    click.echo(f"serving metrics on http://{metrics_host}:{service.metrics_port}/metrics", err=True)
    if service.run().fenced:
        _exit_fenced()


#: Exit status of a router that stopped because another process took over its
#: transactional id: a supervisor must not simply restart it with the same id
#: (the two would fence each other in turn), someone should look.
EXIT_FENCED = 3


def _exit_fenced() -> None:
    click.echo(
        "router stopped: fenced by another process using the same instance id "
        "(--instance); nothing more was written by this one",
        err=True,
    )
    raise SystemExit(EXIT_FENCED)


def _stop_on_signals(stop: object) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop()  # type: ignore[operator]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
