"""Shared CLI plumbing: settings, which cluster to talk to, reading JSON input."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from broker import config
from broker.errors import SafeshareError


def settings() -> config.Settings:
    try:
        return config.load()
    except SafeshareError as exc:
        raise click.UsageError(str(exc)) from exc


def bootstrap_option(f: Any) -> Any:
    return click.option(
        "--bootstrap",
        envvar="SAFESHARE_BOOTSTRAP",
        help="Kafka bootstrap servers (default: $SAFESHARE_BOOTSTRAP, else the local broker "
        "started by `make kafka-up`).",
    )(f)


def resolve_bootstrap(given: str | None) -> str:
    """The cluster a CLI command talks to. Never starts one implicitly."""
    if given:
        return given
    from broker.kafka.local import running_bootstrap  # noqa: PLC0415

    found = running_bootstrap(settings())
    if found:
        return found
    raise click.UsageError(
        "no Kafka cluster: set SAFESHARE_BOOTSTRAP (or --bootstrap), or start the local "
        "broker with `make kafka-up`"
    )


def read_json_source(source: str) -> list[Any]:
    """Read one JSON value, a JSON array, or JSON lines from FILE or '-' (stdin)."""
    if source == "-":
        text = sys.stdin.read()
        name = "<stdin>"
    else:
        try:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {source}: {exc.strerror}") from exc
        name = source
    text = text.strip()
    if not text:
        raise click.BadParameter(f"{name}: no event given (empty input)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        values = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise click.BadParameter(
                    f"{name}:{n}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from exc
        return values
    return value if isinstance(value, list) else [value]
