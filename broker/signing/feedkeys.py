"""A subscriber's feed keyring: every private feed key it has had, in one file.

Rotation adds a key and never removes one: records sealed to an old key stay
readable as long as the keyring keeps it (the record names its key id). The
file is JSON, readable by its owner only (mode 0600)::

    {"format": "safeshare.feed-keyring/1", "subscriber": "torbay-mash",
     "keys": [{"id": "...", "kem": "MLKEM768-X25519",
               "private_key": "<base64>", "created_at": "2026-12-06T05:00:00Z"}]}

``private_key`` is the KEM's standard private encoding (X-Wing: the 32-byte
seed; DHKEM-X25519: the 32-byte scalar), so another HPKE implementation can
use it as is.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.signing.feeds import DEFAULT_KEM, FeedKeyError, FeedOpener, FeedPrivateKey

FORMAT = "safeshare.feed-keyring/1"


def keyring_path(home: Path, subscriber: str) -> Path:
    """Where a subscriber's feed keyring lives by default (``safeshare keys new-feed``,
    ``safeshare feed tail``, ``make run``)."""
    return home / "keys" / "subscribers" / f"{subscriber}.json"


@dataclass
class FeedKeyring:
    """The private feed keys of one subscriber, oldest first."""

    subscriber: str
    keys: list[FeedPrivateKey] = field(default_factory=list)

    def new_key(self, kem: str = DEFAULT_KEM) -> FeedPrivateKey:
        """Generate a key, add it, and return it (the caller saves the keyring)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = FeedPrivateKey.generate(kem, created_at=now)
        self.keys.append(key)
        return key

    def opener(self) -> FeedOpener:
        return FeedOpener(self.subscriber, self.keys)

    # -- file ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "subscriber": self.subscriber,
            "keys": [
                {
                    "id": k.id,
                    "kem": k.kem,
                    "private_key": base64.b64encode(k.private_key).decode("ascii"),
                    "created_at": k.created_at,
                }
                for k in self.keys
            ],
        }

    def save(self, path: os.PathLike[str] | str) -> None:
        """Write the keyring (0600), replacing the file in one step."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_json(), fh, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: os.PathLike[str] | str) -> FeedKeyring:
        """Read a keyring; one clear line naming the problem if it is not one."""
        where = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise FeedKeyError(f"{where}: cannot read feed keyring ({exc.strerror})") from None
        except (ValueError, UnicodeDecodeError):
            raise FeedKeyError(f"{where}: not a feed keyring (not JSON)") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FeedKeyError(f"{where}: not a feed keyring (format is not {FORMAT!r})")
        subscriber, entries = data.get("subscriber"), data.get("keys")
        if not isinstance(subscriber, str) or not isinstance(entries, list):
            raise FeedKeyError(f"{where}: needs a subscriber and a list of keys")
        keys: list[FeedPrivateKey] = []
        for i, e in enumerate(entries):
            at = f"{where}: keys[{i}]"
            if not isinstance(e, dict):
                raise FeedKeyError(f"{at}: not a mapping")
            try:
                raw = base64.b64decode(str(e.get("private_key", "")), validate=True)
                key = FeedPrivateKey(str(e.get("kem")), raw, str(e.get("created_at") or ""))
            except ValueError:
                raise FeedKeyError(f"{at}.private_key: not base64") from None
            except FeedKeyError as exc:
                raise FeedKeyError(f"{at}: {exc}") from None
            if e.get("id") not in (None, key.id):
                raise FeedKeyError(f"{at}.id: {e.get('id')!r} is not this key's id {key.id}")
            keys.append(key)
        return cls(subscriber, keys)
