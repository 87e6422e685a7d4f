"""Secret keys a Safeshare process keeps in a file of its own, made on first use.

Each is random bytes, mode 0600, that never travel on Kafka: the router's
subject pseudonym key (the audit log's keyed pseudonyms of children,
``$SAFESHARE_HOME/keys/subject-pseudonym.key``), the gateway's key for the
pseudonyms of people who read records (``keys/reader-pseudonym.key``) and its
bearer-token key (``gateway/token.key``). The router and the gateway both use
them, so they live in neither. A key that cannot be read, or is too short,
stops its process (fail closed: a fresh key would silently unlink every
pseudonym made under the old one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from broker.errors import ConfigError

log = logging.getLogger(__name__)

SUBJECT_KEY_FILE = "subject-pseudonym.key"
"""The router's key for the audit log's pseudonyms of children, in ``Settings.keys_dir``."""


def load_or_create_secret(path: Path, nbytes: int = 32) -> bytes:
    """The key in ``path``, created (``nbytes`` random bytes, mode 0600) if there
    is none yet. :class:`ConfigError` naming the file if it cannot be read or
    made, or is shorter than ``nbytes``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = _create(path, nbytes)
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc.strerror}") from None
    if len(data) < nbytes:
        raise ConfigError(f"key {path} is too short ({len(data)} bytes, need {nbytes})")
    return data


def _create(path: Path, nbytes: int) -> bytes:
    """Write a new key whole, then link it into place: a process starting at the
    same moment either reads the whole key or finds it already made and uses
    that one (never a half-written file, never two keys)."""
    data = secrets.token_bytes(nbytes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()  # made first by another process: that is the key
    except OSError as exc:
        raise ConfigError(f"cannot create key {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):  # never made, or linked: nothing to keep
            tmp.unlink()
    log.info("created secret key %s", path)
    return data
