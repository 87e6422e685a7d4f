"""What an agency's event must pass before it is sent: the router's own rules,
wherever the sender can know them.

A receipt ("published") must never promise what will not happen. So
:class:`Intake` refuses, before anything reaches Kafka, every event the router
would quarantine or share with nobody, as far as the sender can tell:

- the source agency is not the publishing agency (router: ``AGENCY_MISMATCH``);
- the event does not fit the schema, or one of its times is not plausible
  now (:mod:`broker.codec.times`: before 2000, in the future, occurred after
  reported) (``SCHEMA_INVALID``);
- its message is over the one size limit, :data:`broker.codec.MAX_EVENT_BYTES`
  (``OVERSIZED``);
- given the policy the router runs: the agency is not registered in it (the
  router withholds everything, ``UNKNOWN_AGENCY``), or the event lacks a
  signature the policy requires, or is signed with a key the policy does not
  hold or that is not valid now (``BAD_SIGNATURE``).

What the sender cannot know is left to the router: whether the router knows
the schema the sender encoded with (``UNKNOWN_SCHEMA``, when the two run
different schema directories), a policy that differs from the sender's copy, or
an event id already seen (``DUPLICATE``).

``safeshare publish``, :class:`broker.api.Publisher` and the gateway all admit
events through this one class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.codec.exceptions import EncodingError
from broker.codec.jsontext import read_events
from broker.codec.limits import MAX_EVENT_BYTES, too_big
from broker.codec.times import DEFAULT_BOUNDS, TimeBounds
from broker.identity.nhs import with_canonical_identifiers
from broker.policy import Policy
from broker.signing import AgencySigner, sign_message, signature_problem
from broker.signing.events import SIGNATURE_SIZE

ENVELOPE = "safeshare.ConcernEvent"


class EventRefused(EncodingError):
    """An event the router would not route as sent; ``problems`` say why, field first.

    A subclass of :class:`EncodingError`, so a caller catching that (the API's
    documented error for an invalid event) catches every refusal.
    """


def check_source(event: Mapping[str, Any], agency: str) -> None:
    """Refuse an event whose source agency is not the publishing agency.

    The router would quarantine it anyway (an agency may only speak for
    itself); refusing here tells the sender at once.
    """
    source = event.get("source") or {}
    found = source.get("agency_id") if isinstance(source, Mapping) else None
    if found != agency:
        raise EventRefused(
            f"source.agency_id: publishing as agency {agency!r}, but the event says it is "
            f"from {found!r}"
        )


class Intake:
    """Checks, encodes and signs an agency's events; see the module docstring.

    ``policy`` is the policy the router runs, when the sender has it: without
    one the policy's rules are not checked (the router still applies them).
    ``clock`` is the time signing keys must be valid at and times are judged
    against; ``time_bounds`` how far ahead of it a time may be.
    """

    def __init__(
        self,
        *,
        agency: str,
        codec: Codec | None = None,
        signer: AgencySigner | None = None,
        policy: Policy | None = None,
        clock: Clock | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        time_bounds: TimeBounds = DEFAULT_BOUNDS,
    ) -> None:
        if signer is not None and signer.agency_id != agency:
            raise ValueError(f"signing key is for agency {signer.agency_id!r}, not {agency!r}")
        self.agency = agency
        self.codec = codec or Codec.default()
        self.max_event_bytes = max_event_bytes
        self.time_bounds = time_bounds
        self._signer = signer
        self._policy = policy
        self._clock = clock or SystemClock()

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """The wire bytes of ``event`` (in-memory shape), signed if there is a signer.

        Raises :class:`EncodingError` (:class:`EventRefused` for the rules above
        the schema) naming the field; nothing is sent by this method.
        The subject's NHS number and UPN may be typed with spaces or hyphens;
        the event carries them in canonical form (broker/identity/nhs.py).
        """
        check_source(event, self.agency)
        event = with_canonical_identifiers(event)
        registered = None
        if self._policy is not None:
            registered = self._policy.agency(self.agency)
            if registered is None:
                raise EventRefused(
                    f"source.agency_id: agency {self.agency!r} is not registered in the policy "
                    f"{self._policy.name!r}; the router would share nothing it sends"
                )
        limit = self.max_event_bytes
        if self._signer is None:
            data = self.codec.encode(dict(event), ENVELOPE, limit=limit)
        else:
            unsigned = self.codec.encode({**event, "signature": None}, ENVELOPE, limit=limit)
            data = sign_message(unsigned, self._signer)
        self.codec.check_times(event, self._clock.now_ms(), self.time_bounds, ENVELOPE)
        if len(data) > self.max_event_bytes:
            raise EventRefused(too_big(event, len(data), self.max_event_bytes))
        if self._policy is not None and registered is not None:
            signature = data[-SIGNATURE_SIZE:] if self._signer else event.get("signature")
            problem = signature_problem(
                data,
                signature,
                self.agency,
                registered.keys,
                required=self._policy.event_signatures == "required",
                at_ms=self._clock.now_ms(),
            )
            if problem is not None:
                raise EventRefused(f"signature: {problem}{_SIGNING_HINT}")
        return data

    def encode_all(
        self, text: bytes, name: str = "<input>"
    ) -> list[tuple[dict[str, Any], bytes]]:
        """Every event in the JSON text ``text`` (one event, an array, or JSON lines:
        :func:`broker.codec.jsontext.read_events`) as (record, wire bytes).

        All or nothing: the first event refused raises :class:`EncodingError`
        whose one line names ``name``, the event (and its line) and the field or
        byte offset, so a caller sends nothing.
        """
        events = read_events(text, name)
        out = []
        for n, (obj, line) in enumerate(zip(events.values, events.lines, strict=True), 1):
            where = f"event {n}" if len(events.values) > 1 else "event"
            if events.json_lines:
                where += f" (line {line})"
            try:
                record = self.codec.from_json(obj, ENVELOPE)
                out.append((record, self.encode(record)))
            except EncodingError as exc:
                raise type(exc)(f"{name}: {where}: {exc}") from None
        if not out:
            raise EventRefused(f"{name}: no event given (an empty array)")
        return out


_SIGNING_HINT = " (policy: sign with a key registered for the agency; `safeshare keys new`)"
