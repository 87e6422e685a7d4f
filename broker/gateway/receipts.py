"""``GET /v1/events/{event_id}/receipt``: what became of an agency's event, with proof.

Once the router has decided and the checkpointer has signed a checkpoint
covering the decisions, the receipt lists every share/withhold decision about
the event (recipient, outcome, reason code, rule, lawful basis, time, leaf
index) and carries the inclusion proofs in the document format of ``safeshare
audit prove`` (:func:`broker.audit.verify.proof_document`), which ``safeshare
audit verify-proof`` checks offline against the log's public key.

Visible to the publishing agency only (the leaves' ``source_agency``): every
decision about its own event is its to know, and the leaves carry no personal
data (the subject is a keyed pseudonym, payloads are digests). Before a
checkpoint covers the event the receipt has the publication only
(``proof: null``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from broker.audit import note
from broker.audit.bundle import Bundle
from broker.audit.leaf import AuditLeaf
from broker.audit.stream import read_log
from broker.audit.verify import proof_document
from broker.errors import SafeshareError
from broker.gateway.auth import caller, require
from broker.gateway.errors import ApiError, ErrorBody
from broker.gateway.events import Receipt
from broker.gateway.pki import Principal

router = APIRouter()
LOG_TTL_S = 1.0
"""How long a read of the checkpointed log serves receipts (it grows only when a
checkpoint is published; a receipt is at most this much behind one)."""
EVENT_ID = r"^[A-Za-z0-9._:-]{1,64}$"


class _LogCache:
    """The last read of the checkpointed log, reused for :data:`LOG_TTL_S`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -LOG_TTL_S
        self._bundle: Bundle | None = None

    def get(self, read: Callable[[], Bundle]) -> Bundle:
        with self._lock:
            if self._bundle is None or time.monotonic() - self._at >= LOG_TTL_S:
                self._bundle = read()
                self._at = time.monotonic()
            return self._bundle


def log_cache() -> _LogCache:
    return _LogCache()


class Decision(BaseModel):
    leaf_index: int
    kind: str
    recipient: str
    outcome: str
    reason: str
    rule_id: str
    lawful_basis: str
    time_ms: int


class EventStatus(BaseModel):
    event_id: str
    published: Receipt | None
    decisions: list[Decision]
    proof: dict[str, Any] | None


def decisions_of(doc: dict[str, Any]) -> tuple[set[str], list[Decision]]:
    """The source agencies and the decisions the proof document's leaves record."""
    sources: set[str] = set()
    out: list[Decision] = []
    for p in doc["proofs"]:
        leaf = AuditLeaf.from_bytes(note.b64decode_strict(p["leaf"], canonical=True))
        sources.add(leaf.source_agency)
        out.append(Decision(
            leaf_index=p["index"], kind=leaf.kind.value, recipient=leaf.recipient,
            outcome=leaf.outcome, reason=leaf.reason, rule_id=leaf.rule_id,
            lawful_basis=leaf.lawful_basis, time_ms=leaf.time_ms))
    return sources, out


@router.get("/v1/events/{event_id}/receipt", response_model=EventStatus,
            responses={s: {"model": ErrorBody} for s in (401, 403, 404, 429, 503)},
            summary="An event's receipt with its decisions and their inclusion proofs")
async def get_receipt(
    request: Request,
    who: Annotated[Principal, Depends(caller)],
    event_id: Annotated[str, Path(pattern=EVENT_ID)],
) -> EventStatus:
    if who.kind != "agency":
        await require(request, who, "agency", who.id, "read receipts")
    config = request.app.state.config
    try:
        published = await run_in_threadpool(request.app.state.desk.receipt_of, who.id, event_id)
    except SafeshareError as exc:
        raise ApiError(503, f"the receipts could not be read: {type(exc).__name__}") from None

    log_cache: _LogCache = request.app.state.audit_log

    def prove() -> dict[str, Any] | None:
        return proof_document(log_cache.get(lambda: read_log(config.bootstrap, config.topics)),
                              event_id)

    try:
        doc = await run_in_threadpool(prove)
    except SafeshareError as exc:
        raise ApiError(503, f"the audit log could not be read: {type(exc).__name__}") from None
    decisions: list[Decision] = []
    if doc is not None:
        sources, decisions = decisions_of(doc)
        if sources != {who.id}:
            await require(request, who, "agency", sorted(sources - {who.id})[0], "read receipts")
    if doc is None and published is None:
        raise ApiError(404, f"no receipt for event {event_id!r} from {who}: not published "
                       "through this gateway, or not yet in a checkpointed log")
    return EventStatus(
        event_id=event_id,
        published=Receipt(**published.as_json()) if published is not None else None,
        decisions=decisions, proof=doc)
