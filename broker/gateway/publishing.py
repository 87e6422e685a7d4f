"""Publishing an agency's events for it: the gateway's ``POST /v1/events`` without HTTP.

Every event passes the same :class:`broker.intake.Intake` as ``safeshare
publish`` (schema, the one size limit, implausible times, the agency's
registration and signature as the policy requires) before anything is sent;
the whole request is refused, naming every bad field, if one event is bad.

Signing: an event that carries a signature was signed by the agency's own key
(the client library, :mod:`broker.gateway.client`, signs) and is checked, never
re-signed. An unsigned event is signed by the gateway only if the policy says
the agency delegates signing to it (``signing: gateway``); the receipt says
which (``signed_by``: ``agency``, ``gateway`` or ``none``), and each event the
gateway signs is a SIGNED_FOR leaf in the signed audit log (and a ``signed_for``
record on the consultations topic), acknowledged before the event is sent: if
it cannot be written, nothing is sent (503).

Idempotency: a request is known by the agency and its ``X-Request-ID`` (or,
without one, by its event ids). A retry with the same body gets the same
receipts and sends nothing; the same id with a different body is a conflict.
Each event id too is published once per agency: the same event again returns
its first receipt, the same id with different content is a conflict. The
memory is bounded (newest kept) and survives a restart: each published record
carries its request id and body digest in headers, and the memory of an
agency is rebuilt from its ingest topic before the gateway publishes for it
again (:mod:`broker.gateway.recall`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from broker.api import Publisher
from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.codec.exceptions import EncodingError
from broker.codec.jsontext import read_events
from broker.codec.times import DEFAULT_BOUNDS, TimeBounds
from broker.errors import SafeshareError
from broker.gateway import onloop, recall
from broker.intake import ENVELOPE, Intake
from broker.policy import Policy
from broker.signing import AgencySigner, SignatureError
from broker.topics import Topics

MAX_REMEMBERED = 100_000
CHECK_ON_LOOP_BYTES = 16 * 1024
"""A body this long or longer is checked on a pool thread: the check takes about
0.25 ms an event, and a batch of 100 would hold up every other request."""


class Refused(Exception):
    """The request is not acceptable; ``problems`` name every bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Forbidden(Exception):
    """An event says it is from another agency than the caller (403)."""

    def __init__(self, claimed: str) -> None:
        self.claimed = claimed
        super().__init__(claimed)


class Conflict(Exception):
    """An id already used for something else (409)."""


@dataclass(frozen=True)
class EventReceipt:
    """What the gateway published for one event."""

    event_id: str
    digest: str
    """SHA-256 (hex) of the exact bytes published: the Avro single-object message."""
    topic: str
    partition: int
    offset: int
    signed_by: str

    def as_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "digest": self.digest, "topic": self.topic,
                "partition": self.partition, "offset": self.offset, "signed_by": self.signed_by}


def signing_key_path(keys_dir: Path, agency: str) -> Path:
    """Where the gateway keeps the key of an agency that delegates signing to it."""
    return keys_dir / f"{agency}.pem"


class _Memory:
    """Bounded id -> (body digest, result) memory, and a lock per id in flight.

    The locks are asyncio locks (the requests run on the event loop), each
    dropped when nobody holds or awaits it; the memory itself is shared with
    the threads that rebuild it (:mod:`broker.gateway.recall`), hence the guard.
    """

    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self._done: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}
        self._guard = threading.Lock()
        self._size = size

    @asynccontextmanager
    async def held(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Hold ``key``'s lock (one request at a time per request id or event id)."""
        lock, users = self._locks.get(key) or self._locks.setdefault(
            key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def in_flight(self) -> int:
        """How many ids are locked or awaited now (0 when the desk is idle)."""
        return len(self._locks)

    def get(self, key: tuple[str, str]) -> tuple[str, Any] | None:
        with self._guard:
            return self._done.get(key)

    def put(self, key: tuple[str, str], digest: str, value: Any) -> None:
        with self._guard:
            self._done[key] = (digest, value)
            self._done.move_to_end(key)
            while len(self._done) > self._size:
                self._done.popitem(last=False)


class EventDesk:
    """Checks and publishes events for agencies; one per gateway process."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Topics,
        codec: Codec,
        policy: Policy | None,
        signing_keys: Path | None = None,
        clock: Clock | None = None,
        max_events: int = 100,
        time_bounds: TimeBounds = DEFAULT_BOUNDS,
        on_signed_for: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.codec = codec
        self.time_bounds = time_bounds
        self.policy = policy
        self.max_events = max_events
        self._on_signed_for = on_signed_for
        self._bootstrap = bootstrap
        self._topics = topics
        self._clock = clock or SystemClock()
        self._publishers: dict[str, Publisher] = {}
        self._delegated: dict[str, Intake] = {}
        self._requests = _Memory()
        self._events = _Memory()
        self._guard = threading.Lock()
        self._recalled: set[str] = set()
        self._ready: set[str] = set()
        self._recall_locks: dict[str, threading.Lock] = {}
        for agency in policy.agencies if policy is not None else ():
            if agency.signing != "gateway":
                continue
            path = signing_key_path(signing_keys or Path("."), agency.id)
            try:
                signer = AgencySigner.load(agency.id, path)
            except (SignatureError, OSError) as exc:
                raise SignatureError(
                    f"agency {agency.id!r} delegates signing to the gateway, but its key "
                    f"cannot be read ({path}): {exc}"
                ) from None
            self._delegated[agency.id] = self._intake(agency.id, signer)

    def _intake(self, agency: str, signer: AgencySigner | None) -> Intake:
        return Intake(
            agency=agency, codec=self.codec, signer=signer, policy=self.policy, clock=self._clock,
            time_bounds=self.time_bounds,
        )

    def _publisher(self, agency: str) -> Publisher:
        with self._guard:
            pub = self._publishers.get(agency)
            if pub is None:
                pub = Publisher(
                    bootstrap=self._bootstrap,
                    agency=agency,
                    topics=self._topics,
                    intake=self._intake(agency, None),
                    producer_config={"linger_ms": 0},
                )
                self._publishers[agency] = pub
            return pub

    def _recall(self, agency: str) -> None:
        """Rebuild ``agency``'s memory from its ingest topic, once per process."""
        if agency in self._recalled:
            return
        with self._guard:
            lock = self._recall_locks.setdefault(agency, threading.Lock())
        with lock:
            if agency in self._recalled:
                return

            def learn(r: recall.Recalled) -> None:
                receipt = EventReceipt(r.event_id, r.digest, r.topic, r.partition, r.offset,
                                       r.signed_by)
                if self._events.get((agency, r.event_id)) is None:
                    self._events.put((agency, r.event_id), r.digest, receipt)
                if r.request_id and r.body_digest:
                    self._requests.put((agency, r.request_id), r.body_digest, None)

            recall.recall(self._bootstrap, self._topics.ingest(agency), self.codec,
                          MAX_REMEMBERED, learn)
            self._recalled.add(agency)

    def warm(self) -> None:
        """Rebuild every policy agency's memory now, on a thread, so the first
        request of each does not wait for it (a failure is retried by that request)."""

        def run(agency: str) -> None:
            try:
                self._recall(agency)
            except Exception:  # noqa: BLE001 - tried again by the agency's first request
                return

        # One thread each: a recall is mostly waiting on the broker (~0.5-1 s).
        for agency in self.policy.agencies if self.policy is not None else ():
            threading.Thread(target=run, args=(agency.id,), name=f"recall-{agency.id}",
                             daemon=True).start()

    def delegates(self, agency: str) -> bool:
        return agency in self._delegated

    def check(self, agency: str, body: bytes) -> list[tuple[dict[str, Any], bytes, str]]:
        """Every event in ``body`` as (record, wire bytes, signed_by); all or nothing.

        Raises :class:`Refused` naming every bad field of every bad event,
        each line as ``safeshare publish`` words it (``event N: `` first when
        the body holds several events).
        """
        try:
            events = read_events(body, "request body")
        except EncodingError as exc:
            raise Refused(list(exc.problems)) from None
        if len(events.values) > self.max_events:
            raise Refused([f"request body: {len(events.values)} events, more than the limit of "
                           f"{self.max_events} per request"])
        for obj in events.values:
            source = obj.get("source") if isinstance(obj, dict) else None
            claimed = source.get("agency_id") if isinstance(source, dict) else None
            if isinstance(claimed, str) and claimed != agency:
                raise Forbidden(claimed)
        plain = self._publisher(agency).intake
        out: list[tuple[dict[str, Any], bytes, str]] = []
        problems: list[str] = []
        many = len(events.values) > 1
        for n, obj in enumerate(events.values, 1):
            where = f"event {n}: " if many else ""
            try:
                record = self.codec.from_json(obj, ENVELOPE)
                signed = record.get("signature") is not None
                intake = plain if signed or agency not in self._delegated else (
                    self._delegated[agency]
                )
                data = intake.encode(record)
            except EncodingError as exc:
                problems.extend(where + p for p in exc.problems)
                continue
            by = "agency" if signed else ("gateway" if intake is not plain else "none")
            out.append((record, data, by))
        if problems:
            raise Refused(problems)
        if not out:
            raise Refused(["request body: no event given (an empty array)"])
        return out

    async def publish(
        self, agency: str, body: bytes, request_id: str | None
    ) -> tuple[list[EventReceipt], bool]:
        """Check and publish the events in ``body``; (receipts, replayed).

        On the event loop: the agency's first request waits on a pool thread
        for its memory and producer (:meth:`_prepare`), a large body is checked
        on one; each acknowledgement is awaited without a thread
        (:mod:`broker.gateway.onloop`). ``replayed`` is true when the request
        (or every event in it) had been published before and nothing new was sent.
        """
        body_digest = hashlib.sha256(body).hexdigest()
        if agency not in self._ready:
            await run_in_threadpool(self._prepare, agency)
        key = (agency, request_id) if request_id else None
        if key is None:
            return await self._publish_checked(agency, await self._check(agency, body), None,
                                               body_digest)
        async with self._requests.held(key):
            seen = self._requests.get(key)
            if seen is not None:
                if seen[0] != body_digest:
                    raise Conflict(
                        f"X-Request-ID {request_id!r} was used for a different request body"
                    )
                if seen[1] is not None:
                    return seen[1], True
                # Learnt from the ingest topic: its events' receipts are known (those
                # of a request cut short are published now).
            receipts, replayed = await self._publish_checked(
                agency, await self._check(agency, body), request_id, body_digest)
            self._requests.put(key, body_digest, receipts)
        return receipts, replayed

    def _prepare(self, agency: str) -> None:
        """What an agency's first request waits for (blocking: on a pool thread):
        its memory rebuilt from its ingest topic and its producer made."""
        self._recall(agency)
        self._publisher(agency)
        self._ready.add(agency)

    async def _check(self, agency: str, body: bytes) -> list[tuple[dict[str, Any], bytes, str]]:
        if len(body) < CHECK_ON_LOOP_BYTES:
            return self.check(agency, body)
        return await run_in_threadpool(self.check, agency, body)

    async def _publish_checked(
        self, agency: str, checked: list[tuple[dict[str, Any], bytes, str]],
        request_id: str | None, body_digest: str,
    ) -> tuple[list[EventReceipt], bool]:
        pub = self._publisher(agency)
        receipts: list[EventReceipt] = []
        fresh = False
        for record, data, by in checked:
            digest = hashlib.sha256(data).hexdigest()
            key = (agency, str(record["event_id"]))
            async with self._events.held(key):
                seen = self._events.get(key)
                if seen is not None:
                    if seen[0] != digest:
                        raise Conflict(
                            f"event_id {key[1]!r} was already published with other content"
                        )
                    receipts.append(seen[1])
                    continue
                headers = recall.headers(request_id, body_digest, by)
                if by == "gateway" and self._on_signed_for is not None:
                    # Audited before it is sent: unwritable audit, nothing sent.
                    await run_in_threadpool(self._on_signed_for, agency,
                                            str(record["event_id"]), digest)
                try:
                    future = await onloop.started(
                        functools.partial(pub.start_now, record, data, headers=headers),
                        functools.partial(pub.start, record, data, headers=headers))
                    meta = await onloop.acknowledged(future)
                except SafeshareError:
                    if pub.broken:  # a record refused for good: kafka-python sends no more
                        await run_in_threadpool(self._drop, agency, pub)
                    raise
                receipt = EventReceipt(str(record["event_id"]), digest, meta.topic,
                                       meta.partition, meta.offset, by)
                self._events.put(key, digest, receipt)
                receipts.append(receipt)
                fresh = True
        return receipts, not fresh

    def _drop(self, agency: str, pub: Publisher) -> None:
        """Forget ``agency``'s broken publisher; its next request makes a new one."""
        with self._guard:
            if self._publishers.get(agency) is pub:
                del self._publishers[agency]
                self._ready.discard(agency)
        pub.close()

    def receipt_of(self, agency: str, event_id: str) -> EventReceipt | None:
        self._recall(agency)
        seen = self._events.get((agency, event_id))
        return None if seen is None else seen[1]

    def close(self) -> None:
        with self._guard:
            for pub in self._publishers.values():
                pub.close()
            self._publishers.clear()

