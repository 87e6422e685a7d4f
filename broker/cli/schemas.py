"""``safeshare schemas``: check schema compatibility, list fingerprints, keep versions.

Register in ``broker/cli/main.py`` as ``("broker.cli.schemas", "schemas")``.
"""

from __future__ import annotations

from pathlib import Path

import click

_DIR_OPTION = click.option(
    "--dir",
    "schemas_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Schemas directory (default: the project's schemas/).",
)


def _schemas_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    from broker.cli.common import settings  # noqa: PLC0415 - keep `--help` fast

    return settings().schemas_dir


@click.group(name="schemas")
def schemas() -> None:
    """Avro schemas of the event contract (schemas/, kept versions in schemas/history/)."""


@schemas.command()
@_DIR_OPTION
def check(schemas_dir: Path | None) -> None:
    """Check that the current schemas keep Safeshare's rules and can read every kept version.

    Exits 1 and lists every reason when a change would break old data (Avro
    schema resolution) or a field lacks a doc, a dataClass, or nullability.
    """
    from broker.codec import Codec, check_compatibility  # noqa: PLC0415

    directory = _schemas_dir(schemas_dir)
    problems = check_compatibility(directory)
    if problems:
        for problem in problems:
            click.echo(f"FAIL {problem}", err=True)
        click.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        raise SystemExit(1)
    codec = Codec.from_dir(directory)
    kept = sum(1 for v in codec.versions() if v.version is not None)
    click.echo(f"ok: {len(codec.names())} record schemas, {kept} kept version(s) readable")


@schemas.command()
@_DIR_OPTION
@click.option("--all", "show_all", is_flag=True, help="Also list kept historical versions.")
def fingerprints(schemas_dir: Path | None, show_all: bool) -> None:
    """List record schemas and their CRC-64-AVRO fingerprints (hex, wire byte order)."""
    from broker.codec import Codec, CodecError  # noqa: PLC0415

    try:
        codec = Codec.from_dir(_schemas_dir(schemas_dir))
    except CodecError as exc:
        raise click.ClickException(str(exc)) from exc
    for v in codec.versions():
        if v.version is None:
            click.echo(f"{v.fingerprint.hex()}  {v.name}")
        elif show_all:
            click.echo(f"{v.fingerprint.hex()}  {v.name}  (kept v{v.version})")


@schemas.command()
@_DIR_OPTION
@click.argument("names", nargs=-1)
def snapshot(schemas_dir: Path | None, names: tuple[str, ...]) -> None:
    """Keep the current version of each versioned schema (and NAMES) in history/.

    Run after changing a schema and before shipping it: data written with a
    version that is not kept cannot be read after the next change.
    """
    from broker.codec import CodecError  # noqa: PLC0415
    from broker.codec.compat import snapshot as keep  # noqa: PLC0415

    try:
        written = keep(_schemas_dir(schemas_dir), names)
    except CodecError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"kept {path}")
    if not written:
        click.echo("every versioned schema is already kept")
