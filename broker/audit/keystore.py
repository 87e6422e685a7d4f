"""A shard's log signing keys on disk, and the files a key rotation moves through.

Everything lives in ``Settings.home/keys`` (``<stem>`` is ``audit-log`` for
shard 0 and ``audit-log-<shard>`` for the others, because a log key is named
after its shard's origin)::

    <stem>.skey                     the current signing key (mode 0600)
    <stem>.vkey                     the log's *first* public key: the trust anchor that
                                    auditors and witnesses get out of band. Written
                                    once, when the first key is created; later keys
                                    reach them through signed key lists.
    <stem>.next.skey                a rotation in progress (see below)
    <stem>.<key id>.retired.skey    keys rotated out; still used to co-sign checkpoints
                                    while their overlap window lasts

A rotation (:meth:`broker.audit.checkpointer.Checkpointer.rotate_key`) first
writes ``<stem>.next.skey``, then commits the ``KEY_ROTATION`` leaf and the new
signed key list in one Kafka transaction, then :meth:`LogKeyStore.promote_next`
renames the files. A crash between the steps is resolved at the next start
by :meth:`LogKeyStore.resolve_pending`: if the published key list has the
new key, promote it; if not, the rotation never happened and the file goes.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from broker.audit.exceptions import AuditError
from broker.audit.keys import read_private_key, write_private_key
from broker.audit.note import Ed25519Signer

__all__ = ["LogKeyStore", "key_stem"]

log = logging.getLogger(__name__)

_RETIRED = re.compile(r"^(?P<stem>.+)\.(?P<kid>[0-9a-f]{8})\.retired\.skey\Z")


def key_stem(shard: int) -> str:
    """File name stem of a shard's log keys."""
    return "audit-log" if shard == 0 else f"audit-log-{shard}"


class LogKeyStore:
    """The signing keys of one shard's log, under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], *, origin: str, shard: int) -> None:
        self.directory = Path(directory)
        self.origin = origin
        self.stem = key_stem(shard)

    @property
    def current_path(self) -> Path:
        return self.directory / f"{self.stem}.skey"

    @property
    def anchor_path(self) -> Path:
        return self.directory / f"{self.stem}.vkey"

    @property
    def next_path(self) -> Path:
        return self.directory / f"{self.stem}.next.skey"

    def _load(self, path: Path) -> Ed25519Signer:
        signer = Ed25519Signer.from_skey(read_private_key(path))
        if signer.name != self.origin:
            raise AuditError(
                f"{path} holds a key named {signer.name!r}; this log's keys are named after "
                f"its origin {self.origin!r}"
            )
        return signer

    def current(self, *, create: bool = True) -> Ed25519Signer:
        """The current signing key, created on first use (mode 0600) with its anchor vkey."""
        path = self.current_path
        if path.exists():
            return self._load(path)
        if not create:
            raise AuditError(f"no log signing key at {path}")
        self.directory.mkdir(parents=True, exist_ok=True)
        signer = Ed25519Signer.generate(self.origin)
        write_private_key(path, signer.skey)
        if not self.anchor_path.exists():
            self.anchor_path.write_text(signer.vkey + "\n", encoding="ascii")
        log.warning(
            "created log signing key %s for %s; give auditors and witnesses its public key "
            "(trust anchor) %s",
            path,
            self.origin,
            signer.vkey,
        )
        return signer

    def anchor(self) -> str | None:
        """The trust anchor vkey written when the first key was created, if the file is here."""
        if not self.anchor_path.exists():
            return None
        return self.anchor_path.read_text(encoding="ascii").strip()

    def retired(self) -> list[Ed25519Signer]:
        """Keys rotated out (their windows are in the key list), oldest file name first."""
        out = []
        if self.directory.exists():
            for p in sorted(self.directory.iterdir()):
                m = _RETIRED.match(p.name)
                if m and m["stem"] == self.stem:
                    out.append(self._load(p))
        return out

    def stage_next(self) -> Ed25519Signer:
        """Generate the next key; write it to ``<stem>.next.skey`` before anything is published."""
        if self.next_path.exists():
            raise AuditError(
                f"a key rotation is already in progress ({self.next_path}); restart the "
                "checkpointer to finish or undo it"
            )
        signer = Ed25519Signer.generate(self.origin)
        write_private_key(self.next_path, signer.skey)
        return signer

    def pending_next(self) -> Ed25519Signer | None:
        return self._load(self.next_path) if self.next_path.exists() else None

    def promote_next(self) -> Ed25519Signer:
        """After the rotation committed: the current key retires, the next one becomes current."""
        nxt = self._load(self.next_path)
        old = self._load(self.current_path)
        os.replace(self.current_path, self.directory / f"{self.stem}.{old.key_id:08x}.retired.skey")
        os.replace(self.next_path, self.current_path)
        _fsync_dir(self.directory)
        return nxt

    def discard_next(self) -> None:
        self.next_path.unlink(missing_ok=True)

    def resolve_pending(self, published_vkeys: set[str]) -> None:
        """Finish or undo a rotation a crash interrupted (see the module docstring)."""
        nxt = self.pending_next()
        if nxt is None:
            return
        if nxt.vkey in published_vkeys:
            log.warning("finishing the interrupted rotation to key %08x", nxt.key_id)
            self.promote_next()
        else:
            log.warning("undoing a key rotation that was never published (key %08x)", nxt.key_id)
            self.discard_next()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
