"""``GET /v1/feeds/{subscriber}`` (pages), ``.../stream`` (server-sent events) and
``POST .../acks`` (acknowledgements through broker.loop's Acknowledger).

Every record handed over is first recorded as a consultation
(:mod:`broker.gateway.consultations`) with the caller's stated ``purpose``,
which must be one of the subscriber's purposes in the policy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from broker.codec.exceptions import EncodingError
from broker.errors import SafeshareError
from broker.gateway.auth import caller, require
from broker.gateway.consultations import Recorder
from broker.gateway.errors import ApiError, ErrorBody
from broker.gateway.feeds import BadCursor, FeedCursor, format_cursor, item_of, parse_cursor
from broker.gateway.pki import Principal
from broker.kafka.writers import Writers
from broker.loop.api import Acknowledger

log = logging.getLogger(__name__)

router = APIRouter()

SUBSCRIBER = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PURPOSE = r"^[A-Z][A-Z0-9_]{0,63}$"
CURSOR = r"^\d{1,4}:\d{1,19}(,\d{1,4}:\d{1,19})*$"
_ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorBody} for s in (401, 403, 404, 422, 429, 503)
}

SubscriberId = Annotated[str, Path(pattern=SUBSCRIBER)]
Purpose = Annotated[str, Query(pattern=PURPOSE, description=(
    "Why the records are read: one of the subscriber's purposes in the policy "
    "(recorded with the consultation)."))]


class FeedRecordOut(BaseModel):
    topic: str
    partition: int
    offset: int
    event_id: str
    sealed: bool
    key_id: str | None
    message: str | None = Field(description="A sealed copy's bytes, base64 (confidential feeds)")
    record: dict[str, object] | None = Field(description="The FeedRecord, JSON form")
    identity_notice: dict[str, object] | None = Field(
        default=None, description="Instead of a FeedRecord: the IdentityNotice (JSON form) of a"
        " person's link or unlink of two of the feed's children; event_id is its notice_id")
    problem: str | None = Field(
        default=None, description="Set when the gateway could not read this record (a schema"
        " it does not know yet): only its coordinates are given and the cursor moves past it")


class FeedPage(BaseModel):
    records: list[FeedRecordOut]
    cursor: str = Field(description="Where to continue: pass it as ?cursor=")


class AckIn(BaseModel):
    event_id: str = Field(min_length=1, max_length=64)
    kind: str = Field(min_length=1, max_length=32)
    actor: str = Field(min_length=1, max_length=128)
    rag: str | None = Field(default=None, max_length=16)
    outcome: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=4000)
    ack_id: str | None = Field(default=None, max_length=64)


class AckOut(BaseModel):
    ack_id: str
    topic: str
    partition: int
    offset: int


async def _check(request: Request, who: Principal, subscriber: str, purpose: str | None,
                 action: str) -> None:
    await require(request, who, "subscriber", subscriber, action)
    policy = request.app.state.desk.policy
    if policy is None:
        return
    sub = policy.subscriber(subscriber)
    if sub is None:
        raise ApiError(404, f"subscriber {subscriber!r} is not in the policy")
    if purpose is not None and purpose not in sub.purposes:
        raise ApiError(422, f"query purpose: {purpose!r} is not a purpose of {subscriber!r} "
                       f"(one of {', '.join(sorted(sub.purposes))})",
                       [f"query purpose: not a purpose of {subscriber!r}"])


def _open(request: Request, subscriber: str, cursor: str | None) -> FeedCursor:
    try:
        return FeedCursor(request.app.state.config.bootstrap,
                          request.app.state.config.topics.feed(subscriber), parse_cursor(cursor))
    except BadCursor as exc:
        raise ApiError(422, str(exc), [str(exc)]) from None


@router.get("/v1/feeds/{subscriber}", response_model=FeedPage, responses=_ERRORS,
            summary="A page of the caller's own feed from a cursor (read_committed)")
async def get_feed(
    request: Request,
    who: Annotated[Principal, Depends(caller)],
    subscriber: SubscriberId,
    purpose: Purpose,
    cursor: Annotated[str | None, Query(pattern=CURSOR, max_length=6000)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait_ms: Annotated[int, Query(ge=0, le=30_000)] = 0,
) -> FeedPage:
    await _check(request, who, subscriber, purpose, "read the feed")
    codec = request.app.state.codec
    recorder: Recorder = request.app.state.recorder

    def read() -> FeedPage:
        feed = _open(request, subscriber, cursor)
        try:
            items = [item_of(codec, r) for r in feed.page(limit, wait_ms)]
            recorder.consultation(str(who), subscriber, purpose,
                                  [i.consulted for i in items if i.disclosed], "page")
            return FeedPage(records=[FeedRecordOut(**i.json) for i in items],
                            cursor=format_cursor(feed.positions()))
        finally:
            feed.close()

    try:
        return await run_in_threadpool(read)
    except SafeshareError as exc:
        raise ApiError(503, f"the feed could not be read: {type(exc).__name__}") from None


@router.get("/v1/feeds/{subscriber}/stream", responses={
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
    **_ERRORS}, response_class=StreamingResponse,
    summary="The caller's own feed live, as server-sent events")
async def stream_feed(
    request: Request,
    who: Annotated[Principal, Depends(caller)],
    subscriber: SubscriberId,
    purpose: Purpose,
    cursor: Annotated[str | None, Query(pattern=CURSOR, max_length=6000)] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000,
                                       description="end the stream after this many")] = None,
    last_event_id: Annotated[str | None, Header(pattern=CURSOR, max_length=6000)] = None,
) -> StreamingResponse:
    """Each record is an ``event: record`` whose ``id`` is the cursor after it
    (so ``Last-Event-ID`` resumes); a comment line every second keeps it alive."""
    await _check(request, who, subscriber, purpose, "read the feed")
    codec = request.app.state.codec
    recorder: Recorder = request.app.state.recorder
    feed = await run_in_threadpool(_open, request, subscriber, last_event_id or cursor)
    lock = threading.Lock()

    def next_batch(room: int) -> list[tuple[str, str]]:
        with lock:
            records = feed.poll(1000, min(room, 100))
            out = []
            items = [item_of(codec, r) for r in records]
            recorder.consultation(str(who), subscriber, purpose,
                                  [i.consulted for i in items if i.disclosed], "stream")
            positions = {i.consulted.partition: i.consulted.offset + 1 for i in items}
            base = feed.positions()
            for i in items:
                base[i.consulted.partition] = positions[i.consulted.partition]
            running = dict(base)
            for i in items:
                running[i.consulted.partition] = i.consulted.offset + 1
                out.append((format_cursor(running), json.dumps(i.json, sort_keys=True)))
            return out

    async def events() -> AsyncIterator[bytes]:
        sent = 0
        try:
            yield b": safeshare feed\n\n"
            while limit is None or sent < limit:
                if await request.is_disconnected():
                    return
                batch = await run_in_threadpool(next_batch, (limit or 100) - sent
                                                if limit else 100)
                if not batch:
                    yield b": keep-alive\n\n"
                for cur, data in batch:
                    sent += 1
                    yield f"id: {cur}\nevent: record\ndata: {data}\n\n".encode()
        finally:
            await run_in_threadpool(feed.close)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


@router.post("/v1/feeds/{subscriber}/acks", status_code=201, response_model=AckOut,
             responses=_ERRORS, summary="Acknowledge a record of the caller's own feed")
async def post_ack(
    request: Request,
    who: Annotated[Principal, Depends(caller)],
    subscriber: SubscriberId,
    ack: AckIn,
) -> AckOut:
    """Receipt, triage decision (RAG, outcome) or later outcome, written by
    broker.loop's Acknowledger to ``<ns>.ack.<subscriber>``."""
    await _check(request, who, subscriber, None, "acknowledge")
    acks: Writers[str, Acknowledger] = request.app.state.acks

    def write() -> AckOut:
        a = acks.get(subscriber)
        r = a.acknowledge(ack.event_id, ack.kind, actor=ack.actor, rag=ack.rag,
                          outcome=ack.outcome, note=ack.note, ack_id=ack.ack_id)
        return AckOut(ack_id=r.ack_id, topic=r.topic, partition=r.partition, offset=r.offset)

    try:
        return await run_in_threadpool(write)
    except EncodingError as exc:
        problems = list(exc.problems)
        raise ApiError(422, problems[0] if len(problems) == 1 else
                       f"{len(problems)} problems", problems) from None
    except SafeshareError as exc:
        raise ApiError(503, f"the acknowledgement was not written: {type(exc).__name__}") from None
