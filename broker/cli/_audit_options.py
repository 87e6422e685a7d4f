"""The plumbing of ``safeshare audit``: exit codes, shared options, trust anchors, times.

Kept apart from the commands (:mod:`broker.cli.audit`) so each command reads as
what it does; exit codes: 0 success, 1 verification failed, 2 usage or
operational error, 3 a witness detected a split view.
"""

from __future__ import annotations

import functools
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from broker.cli.common import bootstrap_option, resolve_bootstrap, settings

EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_SPLIT_VIEW = 3
MAX_MS = 2**53 - 1


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn our errors into the documented exit codes with a message a person can act on."""
    from broker.audit.exceptions import (  # noqa: PLC0415
        BrokenLogError,
        SplitViewError,
        VerificationError,
    )
    from broker.errors import SafeshareError  # noqa: PLC0415

    try:
        yield
    except SplitViewError as exc:
        click.echo(f"SPLIT VIEW: {exc}", err=True)
        sys.exit(EXIT_SPLIT_VIEW)
    except BrokenLogError as exc:
        click.echo(f"AUDIT LOG BROKEN: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except VerificationError as exc:
        click.echo(f"FAIL: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except SafeshareError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


def shard_option(f: Any) -> Any:
    return click.option(
        "--shard", type=int, default=0, show_default=True, help="Audit log shard (partition)."
    )(f)


def trust_options(f: Any) -> Any:
    f = click.option(
        "--witness-vkey",
        "witness_vkeys",
        multiple=True,
        help="A witness's verifier key (type 0x04) whose cosignatures count. Repeatable.",
    )(f)
    f = click.option(
        "--quorum",
        type=int,
        default=0,
        show_default=True,
        help="Valid cosignatures from --witness-vkey required on every checkpoint.",
    )(f)
    f = click.option(
        "--vkeys",
        "vkeys_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File of trusted log verifier keys, one per line.",
    )(f)
    f = click.option(
        "--vkey",
        "vkeys",
        multiple=True,
        help="A trusted log verifier key (the log's first key, got out of band). Repeatable. "
        "Default: $SAFESHARE_HOME/keys/audit-log.vkey.",
    )(f)
    return f


def trusted_keys(vkeys: Sequence[str], vkeys_file: Path | None, shard: int) -> list[str]:
    """The log keys to trust: given ones, else the trust anchor the checkpointer wrote."""
    from broker.audit.checkpoint import origin_for_shard  # noqa: PLC0415
    from broker.audit.keys import read_vkeys  # noqa: PLC0415
    from broker.audit.keystore import LogKeyStore  # noqa: PLC0415

    out = list(vkeys)
    if vkeys_file is not None:
        out += read_vkeys(vkeys_file)
    if out:
        return out
    store = LogKeyStore(settings().keys_dir, origin=origin_for_shard(shard), shard=shard)
    anchor = store.anchor()
    if anchor is None:
        raise click.UsageError(
            f"no trusted log key: pass --vkey or --vkeys FILE (the log's first public key; "
            f"the checkpointer wrote it to {store.anchor_path})"
        )
    return [anchor]


def load_bundle(bundle: Path | None, bootstrap: str | None, shard: int) -> Any:
    from broker.audit.bundle import Bundle  # noqa: PLC0415
    from broker.audit.stream import read_log  # noqa: PLC0415

    if bundle is not None:
        return Bundle.read(bundle)
    return read_log(resolve_bootstrap(bootstrap), settings().topics, shard=shard)


def bundle_option(f: Any) -> Any:
    return click.option(
        "--bundle",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Work offline from an exported bundle instead of reading Kafka.",
    )(f)


@dataclass(frozen=True)
class LogSource:
    """The log a verifying command reads (Kafka, or an exported bundle), its
    shard, and the keys it trusts: what ``--bundle``, the trust options,
    ``--shard`` and ``--bootstrap`` say, as one value (:func:`log_options`)."""

    bundle: Path | None
    vkeys: tuple[str, ...]
    vkeys_file: Path | None
    quorum: int
    witness_vkeys: tuple[str, ...]
    shard: int
    bootstrap: str | None

    def trusted(self) -> list[str]:
        """The log keys to trust (:func:`trusted_keys`)."""
        return trusted_keys(self.vkeys, self.vkeys_file, self.shard)

    def load(self) -> Any:
        """The log as a :class:`broker.audit.bundle.Bundle` (not verified yet)."""
        return load_bundle(self.bundle, self.bootstrap, self.shard)


def log_options(f: Callable[..., None]) -> Any:
    """``--bundle``, the trust options, ``--shard`` and ``--bootstrap`` (in that
    order in the help), handed to the command as one ``log:`` :class:`LogSource`."""

    @functools.wraps(f)
    def command(*args: Any, bundle: Path | None, vkeys: tuple[str, ...],
                vkeys_file: Path | None, quorum: int, witness_vkeys: tuple[str, ...],
                shard: int, bootstrap: str | None, **kwargs: Any) -> None:
        f(*args, log=LogSource(bundle, vkeys, vkeys_file, quorum, witness_vkeys, shard,
                               bootstrap), **kwargs)

    return bundle_option(trust_options(shard_option(bootstrap_option(command))))


def subject_key(key_file: Path | None) -> bytes:
    """The router's subject pseudonym key, to compute the keyed pseudonym the log
    holds for a child (read only: a key made here would match nothing)."""
    from broker.keyfiles import SUBJECT_KEY_FILE  # noqa: PLC0415

    path = key_file or settings().keys_dir / SUBJECT_KEY_FILE
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.UsageError(
            f"cannot read the subject pseudonym key {path}: {exc.strerror}; pass the router's "
            "key with --key-file"
        ) from None


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_time(value: str | None, default: int) -> int:
    """Milliseconds since the epoch, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None:
        return default
    if re.fullmatch(r"\d+", value):
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is neither milliseconds nor ISO 8601") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}


def parse_duration(value: str) -> int:
    m = _DURATION.match(value.strip())
    if not m:
        raise click.BadParameter(f"{value!r}: use e.g. 3600000, 90s, 30m, 24h or 7d")
    return int(m[1]) * _UNIT_MS[m[2]]


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    return stop


_ALWAYS_COUNTED = ("SHARED", "WITHHELD", "QUARANTINED", "DUPLICATE", "KEY_ROTATION")


def counts(leaves: Sequence[Any]) -> str:
    """Leaves by kind: the router's five always, then every other kind the log
    holds (REFUSED, CONSULTED, ...), so none goes unmentioned."""
    c = Counter(leaf.kind.value for leaf in leaves)
    others = sorted(k for k in c if k not in _ALWAYS_COUNTED)
    return ", ".join(f"{c.get(k, 0)} {k.lower()}" for k in (*_ALWAYS_COUNTED, *others))
