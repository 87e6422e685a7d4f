"""The one size limit of a concern event, shared by every way an event comes in.

``safeshare publish``, :class:`broker.api.Publisher`, the gateway to come and
the router all refuse an event over :data:`MAX_EVENT_BYTES` with the words of
:func:`event_size_problem`, so an agency is never told "published" for an
event the router would quarantine as ``OVERSIZED``.

Why 256 KiB: a safeguarding event is a few kilobytes; the router's copy of it
(a feed record: the event plus the decision, and an encryption envelope on a
confidential feed) and a quarantine record holding it must stay under the
codec's decoding bound and Kafka's default ``message.max.bytes`` (both 1 MiB).
"""

from __future__ import annotations

from typing import Final

#: Largest concern event message, in bytes: the single-object encoding as sent
#: (signature included).
MAX_EVENT_BYTES: Final = 256 * 1024


def event_size_problem(size: int, limit: int = MAX_EVENT_BYTES) -> str | None:
    """Why a message of ``size`` bytes is refused, or None if it is not."""
    if size <= limit:
        return None
    return f"message is {size} bytes, over the limit of {limit} bytes"


def largest_field(record: object) -> tuple[str, int] | None:
    """The path (docs/CONTRACTS.md, "Field paths") and size in bytes of the largest
    string or bytes value in an in-memory record, to say what made an event too big."""
    best: tuple[str, int] | None = None
    stack: list[tuple[str, object]] = [("", record)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            segment = value[0].rsplit(".", 1)[-1]  # a record branch of a union
            stack.append((f"{path}.{segment}" if path else segment, value[1]))
        elif isinstance(value, list | tuple):
            stack.extend((path, v) for v in value)
        elif isinstance(value, str | bytes):
            size = len(value.encode("utf-8", "replace")) if isinstance(value, str) else len(value)
            if best is None or size > best[1]:
                best = (path or "(root)", size)
    return best


def too_big(record: object, size: int, limit: int) -> str:
    """``path: problem`` for a record whose message of ``size`` bytes is over
    ``limit``, naming the field that makes it large."""
    largest = largest_field(record)
    problem = event_size_problem(size, limit) or f"message is {size} bytes"
    if largest is None:
        return f"(root): {problem}"
    return f"{largest[0]}: holds {largest[1]} bytes; {problem}"
