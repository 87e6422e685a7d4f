"""The identity review page: a deciding team's people link the children the router
could not be sure of.

The router routes an event it cannot place for certain under a provisional
pseudonym and raises a review item for each team the policy's
``identity.deciders`` names (broker/routing/identity_decisions.py). Here a
signed-in practitioner of such a team sees the open items (the event, both
children with links to what the team holds of each, the model's probability)
and decides: "same child" (a LINK decision) or "two children" (KEEP_APART),
written by the team's identity desk (:class:`broker.identity.desk.IdentityDesk`)
naming the person; the router applies and audits it, and the item is answered.
A practitioner of any other team gets 403 and writes nothing; the pseudonyms
decided on are always the item's own, never the form's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from broker.errors import SafeshareError
from broker.workspace.render import Workspace
from broker.workspace.sessions import User
from broker.workspace.store import to_ms
from broker.workspace.views import _page, _ws, checked_form, signed_in

router = APIRouter(prefix="/workspace/identity", include_in_schema=False)


def deciders(ws: Workspace) -> tuple[str, ...]:
    """The teams whose people may link children (the policy's ``identity.deciders``)."""
    policy = ws.config.policy
    return tuple(getattr(policy, "identity_deciders", ()) or ())


def _decider(request: Request) -> User | Response:
    """The signed-in practitioner, if their team may decide; else sign-in or 403."""
    user = signed_in(request)
    if isinstance(user, Response):
        return user
    if user.subscriber not in deciders(_ws(request)):
        return _page(request, "missing.html", 403, user=user,
                     what="Your team does not decide which records are one child.")
    return user


def _items(ws: Workspace, subscriber: str) -> list[dict[str, Any]]:
    """The team's open review items, newest first, each with what the team holds:
    one read of the desk's topics, then lookups in the feed store's indexes."""
    store = ws.store(subscriber)
    return [{**item, "raised_ms": to_ms(item["raised_at"]),
             "received": store.get(item["event_id"]) is not None,
             "provisional_held": store.holds(item["provisional"] or ""),
             "candidate_held": store.holds(item["candidate"] or "")}
            for item in reversed(ws.identity_desk(subscriber).reviews())]


@router.get("", include_in_schema=False)
async def reviews(request: Request) -> Response:
    user = _decider(request)
    if isinstance(user, Response):
        return user
    ws = _ws(request)
    try:
        items = await run_in_threadpool(_items, ws, user.subscriber)
    except SafeshareError:
        return _page(request, "missing.html", 503, user=user,
                     what="The review items could not be read just now.")
    return _page(request, "identity.html", user=user, items=items,
                 done=request.query_params.get("done"))


@router.post("/link")
async def link(request: Request) -> Response:
    """An open item's two records are one child: a LINK decision by this person."""
    return await _decide(request, "link")


@router.post("/keep-apart")
async def keep_apart(request: Request) -> Response:
    """An open item's two records are two children: a KEEP_APART decision by this person."""
    return await _decide(request, "keep-apart")


async def _decide(request: Request, action: str) -> Response:
    user = _decider(request)
    if isinstance(user, Response):
        return user
    form = await checked_form(request)
    if isinstance(form, Response):
        return form
    desk = _ws(request).identity_desk(user.subscriber)
    decide = desk.link if action == "link" else desk.keep_apart

    def write() -> bool:
        wanted = form.get("review_id") or ""
        item = next((i for i in desk.reviews() if i["review_id"] == wanted), None)
        if item is None or not item["candidate"] or not item["provisional"]:
            return False
        decide(item["candidate"], item["provisional"], decided_by=user.username,
               review_id=item["review_id"])
        return True

    try:
        decided = await run_in_threadpool(write)
    except SafeshareError as exc:
        return Response(f"not recorded: {type(exc).__name__}", status_code=503)
    if not decided:
        return _page(request, "missing.html", 404, user=user,
                     what="That review is not open for your team (decided already?).")
    return RedirectResponse(f"/workspace/identity?done={action}", status_code=303)
