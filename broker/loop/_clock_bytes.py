"""The single-object bytes of a clock start, spliced from a kept template.

Why: the router writes a ClockRecord for most shares, and building its dict and
running the generated Avro writer was most of :meth:`ClockStarter.starts`. An
Avro record is its fields' encodings in schema order, and a share's clocks
differ only in their ids and times, so the bytes are constant pieces kept per
(owner, kind, referrer) joined with the encoded ids and the two times.

Plain twin: :func:`clock_record` encoded by ``Codec.encode_trusted`` (what the
starter does when :meth:`ClockBytes.record` returns None) or ``Codec.encode``
(``ClockStarter(plain=True)``). :meth:`ClockBytes.checked` compares the two on
sample records and declines (the starter then encodes the dict) when they
differ, so a schema change cannot give wrong bytes; tests hold them equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

from broker.codec import Codec
from broker.codec._write import Unsupported, long_bytes
from broker.loop.core import CLOCK_RECORD
from broker.loop.rules import clock_id

# Distinct (owner, kind, referrer) templates kept; a policy has a few dozen.
_TEMPLATES_MAX: Final = 4096
_MARK: Final = "\x00"  # the event id in a probe clock id (a kind or owner with one: no template)
# Fields after due_at: status OPEN (enum index 0), tiers_escalated 0, stopped_at
# and stopped_by null (union branch 0); escalate_to comes before them.
_OPEN_TAIL: Final = b"\x00\x00\x00\x00"

# (clock id before the event id, its byte length without the event id, the bytes
# from after the event id to the subject's, from after the subject to started_at,
# the bytes after due_at); False: a template the values do not fit.
_Template = tuple[bytes, int, bytes, bytes, bytes] | Literal[False]


def clock_record(
    kind: str, event_id: str, subject: str, owner: str, referrer: str | None,
    started_at: Any, due_at: Any, escalate_to: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """The ClockRecord of a clock a share starts (open, nothing escalated yet)."""
    return {
        "clock_id": clock_id(kind, event_id, owner), "kind": kind,
        "event_id": event_id, "subject": subject, "owner": owner,
        "referrer": referrer, "started_at": started_at, "due_at": due_at,
        "escalate_to": list(escalate_to), "status": "OPEN",
        "tiers_escalated": 0, "stopped_at": None, "stopped_by": None,
    }  # fmt: skip


def _string(s: str) -> bytes:
    raw = s.encode()
    return long_bytes(len(raw)) + raw


class ClockBytes:
    """ClockRecord bytes from templates; ``None`` where the dict must be encoded."""

    def __init__(self, codec: Codec) -> None:
        self._header = codec.header(CLOCK_RECORD)
        self._limit = codec.max_message_bytes
        self._templates: dict[tuple[Any, ...], _Template] = {}

    @classmethod
    def checked(cls, codec: Codec) -> ClockBytes | None:
        """A ClockBytes whose bytes equal ``codec.encode`` of the same records
        (samples with empty, non-ASCII and long strings, 0 to 64 escalation
        subscribers, with and without a referrer, small, negative and large
        times), or None if any differs or cannot be made."""
        made = cls(codec)
        long_ = "é" * 70  # 140 bytes: a two-byte length
        samples = [
            ("TRIAGE_RED", "e1", "ab" * 32, "torbay-mash", "police", 0, 1, ()),
            ("K", "", "", "o", None, -1, 1 << 62, ("a",)),
            (long_, long_, long_, "ö" + long_, long_, 1_796_000_000_000, -(1 << 63), ("x", "ÿ")),
            ("ENCOMPASS", "é", "s", "o", "", 63, 64, tuple(f"s{i}" for i in range(64))),
        ]
        try:
            for kind, event_id, subject, owner, referrer, begin, due, escalate in samples:
                want = codec.encode(
                    clock_record(kind, event_id, subject, owner, referrer, begin, due, escalate),
                    CLOCK_RECORD,
                )
                ids = made.ids(event_id.encode(), subject)
                got = None if ids is None else made.record(
                    owner, kind, referrer, escalate, event_id.encode(), ids, begin, due
                )  # fmt: skip
                if got != want:
                    return None
        except Exception:  # a schema the samples do not fit: encode the dicts
            return None
        made._templates.clear()
        return made

    @property
    def templates(self) -> int:
        """How many usable (owner, kind, referrer) templates are kept."""
        return sum(t is not False for t in self._templates.values())

    @staticmethod
    def ids(event_id: bytes, subject: Any) -> bytes | None:
        """The encoded event id and subject, shared by a share's clocks (the event
        id as its UTF-8 bytes, the record key); None if the subject is no str."""
        if type(subject) is not str:
            return None
        raw = subject.encode()
        return b"".join((long_bytes(len(event_id)), event_id, long_bytes(len(raw)), raw))

    def record(
        self, owner: str, kind: str, referrer: Any, escalate_to: Sequence[str],
        event_id: bytes, ids: bytes, started_at: Any, due_at: Any,
    ) -> bytes | None:  # fmt: skip
        """The single-object bytes of :func:`clock_record` of these values (``ids``
        from :meth:`ids`), or None if they are not of the shape the template
        writes (non-str ids, non-int times) or the record is over the size limit.
        ``escalate_to`` is the owner's: the template is kept per (owner, kind, referrer)."""
        if referrer is not None and type(referrer) is not str:
            return None
        template = self._templates.get((owner, kind, referrer))
        if template is None:
            template = self._template(owner, kind, referrer, escalate_to)
        if template is False or type(started_at) is not int or type(due_at) is not int:
            return None
        before, fixed, after_id, after_subject, tail = template
        try:
            data = b"".join((
                self._header, long_bytes(fixed + len(event_id)), before, event_id, after_id,
                ids, after_subject, long_bytes(started_at), long_bytes(due_at), tail,
            ))  # fmt: skip
        except Unsupported:  # a time out of a long's range
            return None
        return data if len(data) <= self._limit else None

    def _template(
        self, owner: Any, kind: Any, referrer: Any, escalate_to: Sequence[Any]
    ) -> _Template:
        """The constant pieces of the bytes: clock_id (around the event id), kind |
        event_id, subject | owner, referrer | started_at, due_at | escalate_to and
        the fields of an open clock."""
        template: _Template = False
        strings = (owner, kind, *escalate_to)
        if all(type(s) is str for s in strings) and (referrer is None or type(referrer) is str):
            parts = clock_id(kind, _MARK, owner).split(_MARK)
            if len(parts) == 2:  # the event id once, between constant parts
                before, after = (p.encode() for p in parts)
                escalate = b"".join(_string(s) for s in escalate_to)
                template = (
                    before,
                    len(before) + len(after),
                    after + _string(kind),
                    _string(owner) + (b"\x00" if referrer is None else b"\x02" + _string(referrer)),
                    (long_bytes(len(escalate_to)) + escalate if escalate_to else b"")
                    + b"\x00" + _OPEN_TAIL,
                )
        if len(self._templates) >= _TEMPLATES_MAX:
            self._templates.clear()
        self._templates[(owner, kind, referrer)] = template
        return template
