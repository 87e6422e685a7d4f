"""Checks a subscriber's ``feed_keys`` (HPKE public keys for a confidential feed).

Kept apart from the rest of the checker: it is the one place the policy reads
key material, and it asks ``broker.signing.feeds`` whether a key is usable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from broker.policy._yaml import Path
from broker.policy.model import FeedKey

FEED_KEY_FIELDS = {
    "id": True,
    "kem": True,
    "public_key": True,
    "not_before": False,
    "not_after": False,
}


class _Checker(Protocol):
    def problem(self, path: Path, message: str) -> None: ...
    def where(self, path: Path) -> str: ...
    def mapping(self, value: Any, path: Path, keys: Any) -> dict[str, Any] | None: ...
    def string(self, value: Any, path: Path) -> str | None: ...


def check_feed_keys(chk: _Checker, value: Any, path: Path) -> tuple[FeedKey, ...]:
    """Valid public keys of a known KEM, ids that match them, each listed once,
    and at least one key with no ``not_after``: a confidential feed always has
    a key to seal to, so it never falls back to plaintext."""
    from broker.signing.feeds import KEMS, FeedKeyError, FeedPublicKey  # noqa: PLC0415

    if value is None:
        return ()  # a plain (not confidential) feed
    if not isinstance(value, list) or not value:
        chk.problem(path, f"{chk.where(path)}: expected a non-empty list of feed keys")
        return ()
    out: list[FeedKey] = []
    for j, body in enumerate(value):
        kp = (*path, j)
        km = chk.mapping(body, kp, FEED_KEY_FIELDS)
        if km is None:
            continue
        kid = chk.string(km.get("id"), (*kp, "id")) or ""
        kem = chk.string(km.get("kem"), (*kp, "kem")) or ""
        pub = chk.string(km.get("public_key"), (*kp, "public_key")) or ""
        if kem not in KEMS:
            chk.problem((*kp, "kem"), f"kem {kem!r} is not one of {', '.join(KEMS)}")
            continue
        window = [_time_ms(chk, km.get(b), (*kp, b)) for b in ("not_before", "not_after")]
        try:
            key = FeedPublicKey.from_b64(kem, pub)
        except FeedKeyError as exc:
            chk.problem((*kp, "public_key"), f"public_key: {exc}")
            continue
        start, end = window
        if start is not None and end is not None and start >= end:
            chk.problem((*kp, "not_after"), "not_after must be later than not_before")
        if kid != key.id:
            chk.problem((*kp, "id"), f"id {kid!r} is not this key's id {key.id}")
        if key.id in {k.id for k in out}:
            chk.problem((*kp, "id"), f"feed key {key.id} is listed twice")
        out.append(FeedKey(key.id, kem, pub, start, end))
    if out and all(k.not_after_ms is not None for k in out):
        chk.problem(path, "every feed key has a not_after: leave the newest key open-ended")
    return tuple(out)


def _time_ms(chk: _Checker, v: Any, path: Path) -> int | None:
    """An ISO-8601 time (YAML may already have parsed it) in epoch ms, or None."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return int(v.timestamp() * 1000)
    try:
        return int(datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        chk.problem(path, f"{path[-1]}: not an ISO-8601 time")
        return None
