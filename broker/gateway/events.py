"""``POST /v1/events`` and ``GET /v1/events/{event_id}/receipt``."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from broker.errors import SafeshareError
from broker.gateway.auth import caller, require
from broker.gateway.errors import ApiError, ErrorBody
from broker.gateway.publishing import Conflict, EventDesk, Forbidden, Refused

router = APIRouter()

HEADER_ID = r"^[\x21-\x7e]{1,128}$"


class Receipt(BaseModel):
    event_id: str
    digest: str
    topic: str
    partition: int
    offset: int
    signed_by: str


class Receipts(BaseModel):
    receipts: list[Receipt]
    replayed: bool


_EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "one safeshare.ConcernEvent, JSON form"},
                        {"type": "array", "items": {"type": "object"}, "maxItems": 100},
                    ]
                }
            }
        },
    }
}

_ID_HEADERS = ("x-request-id", "x-correlation-id")
_ID = re.compile(HEADER_ID)
_EVENT_OPENAPI = {
    **_EVENT_BODY,
    "parameters": [
        {"in": "header", "name": name, "required": False,
         "schema": {"anyOf": [{"pattern": HEADER_ID, "type": "string"}, {"type": "null"}],
                    "title": name.title()}}
        for name in _ID_HEADERS
    ],
}

_ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorBody} for s in (401, 403, 409, 413, 422, 429, 503)
}


def desk(request: Request) -> EventDesk:
    d: EventDesk = request.app.state.desk
    return d


@router.post(
    "/v1/events",
    status_code=201,
    response_model=Receipts,
    responses={200: {"model": Receipts, "description": "a retry: the first receipts"},
               **_ERRORS},
    openapi_extra=_EVENT_OPENAPI,
    summary="Check and publish the calling agency's concern event(s)",
)
async def post_events(request: Request) -> JSONResponse:
    """One event (a JSON object) or several (an array): all are checked with the
    rules of ``safeshare publish`` before any is sent; 422 names every bad
    field. Idempotent by ``X-Request-ID`` and by event id."""
    # The caller and the two headers are read here, not declared as FastAPI
    # parameters (their description is in _EVENT_OPENAPI): FastAPI's parameter
    # validation cost about a tenth of this route's CPU (docs/PERFORMANCE.md).
    who = await caller(request)
    x_request_id = request.headers.get("x-request-id")
    bad = [f"header {name}: String should match pattern '{HEADER_ID}'"
           for name in _ID_HEADERS
           if (value := request.headers.get(name)) is not None and not _ID.fullmatch(value)]
    if bad:
        raise ApiError(422, bad[0] if len(bad) == 1 else f"{len(bad)} problems", bad)
    try:
        body = await request.body()
    except ClientDisconnect:
        raise ApiError(400, "the client went away before sending the whole body") from None
    if who.kind != "agency":
        await require(request, who, "agency", who.id, "publish events", body)
    d = desk(request)
    try:
        receipts, replayed = await d.publish(who.id, body, x_request_id)
    except Forbidden as exc:
        await require(request, who, "agency", exc.claimed, "publish events", body)
        raise  # pragma: no cover - require raised
    except Refused as exc:
        detail = exc.problems[0] if len(exc.problems) == 1 else f"{len(exc.problems)} problems"
        raise ApiError(422, detail, exc.problems) from None
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    except SafeshareError as exc:
        # The Kafka error's own line (its code and the topic, never the event).
        raise ApiError(503, f"the broker did not take the event: {type(exc).__name__}: "
                       f"{exc}; no receipt") from None
    # The shape of Receipts, without building and dumping the pydantic models.
    out = {"receipts": [r.as_json() for r in receipts], "replayed": replayed}
    return JSONResponse(out, status_code=200 if replayed else 201)
