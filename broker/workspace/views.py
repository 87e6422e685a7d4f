"""The workspace's pages: sign-in, the queue (live by server-sent events), a
concern, a child's chronology, triage and alerts (FastAPI routes, Jinja2).

Every page is for the signed-in user's own subscriber: a concern or child not
in that subscriber's feed is 404, whoever asks. Fields the policy withheld are
shown as withheld with the rule and the data class, never a value. Each view
of a chronology or a concern is recorded as a consultation (who, when, which
records, purpose) before it is shown, and where the policy says so the agency
that published a record is told (broker/workspace/notify.py); if either write
fails nothing is shown (503).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from broker.codec.exceptions import EncodingError
from broker.errors import SafeshareError
from broker.gateway.consultations import Consulted
from broker.loop.api import Acknowledger
from broker.workspace.notify import Read
from broker.workspace.render import Workspace, latest_versions, queue_rows
from broker.workspace.sessions import PRE_COOKIE, SESSION_COOKIE, User, check_password
from broker.workspace.store import Entry

router = APIRouter(prefix="/workspace", include_in_schema=False)

RAGS = ("RED", "AMBER", "GREEN")
CLOCK_WATCH = 200  # rows shown without a clock whose start the stream watches for
OUTCOMES = ("", "NO_FURTHER_ACTION", "INFORMATION_AND_ADVICE", "EARLY_HELP",
            "CHILD_IN_NEED_ASSESSMENT", "STRATEGY_DISCUSSION", "SECTION_47_ENQUIRY",
            "POLICE_ACTION", "REFERRED_ELSEWHERE", "OTHER")  # schemas/TriageOutcome.avsc


def _ws(request: Request) -> Workspace:
    return request.app.state.workspace  # type: ignore[no-any-return]


def _user(request: Request) -> User | None:
    """The signed-in user, whatever their role."""
    ws = _ws(request)
    return ws.sessions.check(request.cookies.get(SESSION_COOKIE), ws.users)


def signed_in(request: Request, role: str = "practitioner") -> User | Response:
    """The signed-in user if they have ``role``; else sign-in (nobody) or 403."""
    user = _user(request)
    if user is None:
        return _signin_redirect()
    if user.role != role:
        return _page(request, "missing.html", 403, user=user,
                     what=f"This page is for the {role} role; you are signed in as {user.role}.")
    return user


def _signin_redirect() -> RedirectResponse:
    return RedirectResponse("/workspace/signin", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > 16_384:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def checked_form(request: Request) -> dict[str, str] | Response:
    """The posted form of a signed-in user, if it carries this session's CSRF token;
    else a 403 (nothing is written)."""
    form = await _form(request)
    if not _ws(request).sessions.csrf_ok(request.cookies.get(SESSION_COOKIE), form.get("csrf")):
        return Response("CSRF token missing or wrong", status_code=403)
    return form


def _page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    ws = _ws(request)
    cookie = request.cookies.get(SESSION_COOKIE) or ""
    html = ws.render(name, csrf=ws.sessions.csrf(cookie) if cookie else "", **ctx)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request, error: str = "") -> HTMLResponse:
    ws = _ws(request)
    pre = request.cookies.get(PRE_COOKIE) or ws.new_pre()
    html = ws.render("signin.html", user=None, csrf=ws.sessions.csrf(pre), error=error)
    resp = HTMLResponse(html, status_code=401 if error else 200, headers=_HEADERS)
    resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/workspace")
    return resp


@router.post("/signin")
async def signin(request: Request) -> Response:
    ws = _ws(request)
    form = await _form(request)
    if not ws.sessions.csrf_ok(request.cookies.get(PRE_COOKIE), form.get("csrf")):
        return await signin_form(request, "The form expired; please sign in again.")
    user = ws.users.get(form.get("username", ""))
    ok = await run_in_threadpool(check_password, user.password if user else
                                 ws.dummy_hash, form.get("password", ""))
    if user is None or not ok:
        return await signin_form(request, "Unknown username or wrong password.")
    if user.role == "practitioner":
        ws.store(user.subscriber)  # warm the feed before the queue is asked for
    resp = RedirectResponse("/workspace/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, ws.sessions.issue(user), httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/workspace",
                    max_age=ws.sessions.lifetime_s)
    resp.delete_cookie(PRE_COOKIE, path="/workspace")
    return resp


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await _form(request)
    if _ws(request).sessions.csrf_ok(request.cookies.get(SESSION_COOKIE), form.get("csrf")):
        resp = _signin_redirect()
        resp.delete_cookie(SESSION_COOKIE, path="/workspace")
        return resp
    return Response("CSRF token missing or wrong", status_code=403)


@router.get("/", response_class=HTMLResponse)
async def queue(request: Request) -> Response:
    if (u := _user(request)) is not None and u.role == "dpo":
        return RedirectResponse("/workspace/dpo/", status_code=303)
    user = signed_in(request)
    if isinstance(user, Response):
        return user
    ws = _ws(request)
    store = ws.store(user.subscriber)
    return _page(request, "queue.html", user=user, rows=queue_rows(ws, store.entries(), user),
                 version=store.version, error=store.error, loading=not store.triage_loaded)


@router.get("/queue/stream")
async def queue_stream(request: Request, since: int = 0) -> Response:
    """New rows of the queue as server-sent events (``event: row``, HTML in ``data``),
    and a row again (``update``) when the loop starts the clock of one shown without."""
    user = _user(request)
    if user is None or user.role != "practitioner":
        return Response("sign in first (as a practitioner)", status_code=401)
    ws = _ws(request)
    store = ws.store(user.subscriber)

    async def events() -> AsyncIterator[bytes]:
        version = max(0, min(since, store.version))
        # Rows shown without a clock, newest last: re-sent once the loop starts one.
        waiting = [e.event_id for e in store.since(0)[:version]
                   if e.event_id not in ws.clocked(user.subscriber)][-CLOCK_WATCH:]
        yield b": workspace queue\n\n"
        while not await request.is_disconnected():
            now = await run_in_threadpool(store.wait_beyond, version, 1.0)
            fresh = store.since(version) if now > version else []
            version = max(version, now)
            clocked = ws.clocked(user.subscriber)
            started = [e for i in waiting if i in clocked and (e := store.get(i)) is not None]
            waiting = [i for i in waiting if i not in clocked]
            if not fresh and not started:
                yield b": keep-alive\n\n"
                continue
            for row in queue_rows(ws, fresh + started, user):
                if row["clock"] is None:
                    waiting = [*waiting, row["event_id"]][-CLOCK_WATCH:]
                html = ws.render("_row.html", row=row).replace("\n", " ")
                payload = json.dumps({"rag": row["rag"], "html": html,
                                      "update": row["event_id"] in {e.event_id for e in started}})
                yield f"id: {version}\nevent: row\ndata: {payload}\n\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


def _purpose(request: Request, user: User) -> str:
    purposes = _ws(request).purposes(user.subscriber)
    asked = request.query_params.get("purpose")
    return asked if asked in purposes else purposes[0]


async def _consult(request: Request, user: User, purpose: str, entries: list[Any]) -> None:
    recorder = getattr(request.app.state, "recorder", None)
    if recorder is None:
        raise SafeshareError("no consultation recorder")
    records = [Consulted(e.event_id, e.topic, e.partition, e.offset,
                         source_agency=str((e.event.get("source") or {}).get("agency_id") or ""))
               for e in entries]
    await run_in_threadpool(recorder.consultation, f"user:{user.username}", user.subscriber,
                            purpose, records, "workspace")
    reads = [Read(e.event_id, str((e.event.get("source") or {}).get("agency_id") or ""),
                  list(e.decision.get("data_classes_shared") or ())) for e in entries]
    try:
        await run_in_threadpool(_ws(request).notifier().consulted, user.subscriber, purpose,
                                reads, recorder.audit)
    except Exception as exc:  # any failed write: nothing is shown
        raise SafeshareError(f"owner notification not written: {type(exc).__name__}") from exc


@router.get("/events/{event_id}", response_class=HTMLResponse)
async def concern(request: Request, event_id: str) -> Response:
    user = signed_in(request)
    if isinstance(user, Response):
        return user
    ws = _ws(request)
    entry = ws.store(user.subscriber).get(event_id)
    if entry is None:
        return _page(request, "missing.html", 404, user=user,
                     what="No concern with that id was shared with your team.")
    purpose = _purpose(request, user)
    try:
        await _consult(request, user, purpose, [entry])
    except SafeshareError:
        return _page(request, "missing.html", 503, user=user,
                     what="The consultation could not be recorded, so nothing is shown.")
    return _page(request, "event.html", user=user, e=ws.view(entry, user), rags=RAGS,
                 outcomes=OUTCOMES, purpose=purpose, done=request.query_params.get("done"))


@router.get("/children/{pseudonym}", response_class=HTMLResponse)
async def chronology(request: Request, pseudonym: str) -> Response:
    user = signed_in(request)
    if isinstance(user, Response):
        return user
    ws = _ws(request)
    child = ws.child(pseudonym)  # a linked child's every pseudonym: one chronology
    entries = ws.store(user.subscriber).chronology(child)
    if not entries:
        return _page(request, "missing.html", 404, user=user,
                     what="Your team has received nothing about that child.")
    purpose = _purpose(request, user)
    try:
        await _consult(request, user, purpose, entries)
    except SafeshareError:
        return _page(request, "missing.html", 503, user=user,
                     what="The consultation could not be recorded, so nothing is shown.")
    return _page(request, "chronology.html", user=user, pseudonym=pseudonym, purpose=purpose,
                 linked=sorted(child - {pseudonym}),
                 events=[ws.view(e, user, fields=False) for e in entries])


Ack = dict[str, Any]


async def _record_acks(request: Request, event_id: str,
                       make: Callable[[Workspace, User, Entry, dict[str, str]],
                                      list[Ack] | Response | None]) -> Response:
    """The triage and review forms: signed in, CSRF checked, the concern is this
    team's; ``make`` turns the form into acknowledgements (or answers itself),
    which are written in order and shown at once (the store's follower reads
    them back after a restart)."""
    user = signed_in(request)
    if isinstance(user, Response):
        return user
    form = await checked_form(request)
    if isinstance(form, Response):
        return form
    ws = _ws(request)
    store = ws.store(user.subscriber)
    entry = store.get(event_id)
    made = None if entry is None else make(ws, user, entry, form)
    if made is None:
        return _page(request, "missing.html", 404, user=user,
                     what="No concern with that id was shared with your team.")
    if isinstance(made, Response):
        return made

    def write() -> None:
        ack: Acknowledger = ws.acknowledger(user.subscriber)
        for a in made:
            a |= {"ack_id": str(uuid.uuid4()), "event_id": event_id, "actor": user.username,
                  "acknowledged_at": int(time.time() * 1000)}
            ack.acknowledge(event_id, a["kind"], actor=user.username, rag=a.get("rag"),
                            outcome=a.get("outcome"), note=a.get("note"),
                            at_ms=a["acknowledged_at"], ack_id=a["ack_id"])
            store.acknowledged(a)

    try:
        await run_in_threadpool(write)
    except EncodingError as exc:
        return Response(f"not recorded: {list(exc.problems)[0]}", status_code=422)
    except SafeshareError as exc:
        return Response(f"not recorded: {type(exc).__name__}", status_code=503)
    return RedirectResponse(f"/workspace/events/{event_id}?done=1", status_code=303)


def _triage(ws: Workspace, user: User, entry: Entry, form: dict[str, str]
            ) -> list[Ack] | Response | None:
    rag = form.get("rag") if form.get("rag") in RAGS else None
    outcome = form.get("outcome") if form.get("outcome") in OUTCOMES[1:] else None
    note = (form.get("note") or "").strip()[:4000] or None
    if rag is None:
        return Response("rag: choose RED, AMBER or GREEN", status_code=422)
    acks: list[Ack] = [{"kind": "TRIAGE", "rag": rag, "note": note}]
    return acks + ([{"kind": "DECISION", "outcome": outcome}] if outcome else [])


def _review(ws: Workspace, user: User, entry: Entry, form: dict[str, str]
            ) -> list[Ack] | Response | None:
    if ws.view(entry, user, fields=False)["review_due"] is None:
        return None  # not a break-glass share
    if form.get("justified") not in ("yes", "no"):
        return Response("justified: answer yes or no", status_code=422)
    verdict = f"break-glass share justified: {form['justified']}"
    return [{"kind": "REVIEWED",
             "note": f"{verdict}. {(form.get('note') or '').strip()}".strip()[:4000]}]


@router.post("/events/{event_id}/triage")
async def triage(request: Request, event_id: str) -> Response:
    """Record a RAG rating, a note and a decision (TRIAGE and DECISION acknowledgements)."""
    return await _record_acks(request, event_id, _triage)


@router.post("/events/{event_id}/review")
async def review(request: Request, event_id: str) -> Response:
    """Record that a break-glass share was reviewed (a REVIEWED acknowledgement)."""
    return await _record_acks(request, event_id, _review)


@router.get("/alerts", response_class=HTMLResponse)
async def alerts(request: Request) -> Response:
    """Pattern alerts received, newest first, each with its evidence: a link to
    each concern the team received, the others named as not shared with it."""
    user = signed_in(request)
    if isinstance(user, Response):
        return user
    ws = _ws(request)
    store = ws.store(user.subscriber)
    found = []
    for e in reversed(latest_versions(store.entries())):
        if e.event.get("category") == "PATTERN":
            found.append(ws.alert(e, user, lambda i: store.get(i) is not None))
    return _page(request, "alerts.html", user=user, alerts=found)
