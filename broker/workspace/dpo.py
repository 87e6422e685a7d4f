"""The data protection officer's pages: a child's subject-access report (with
its PDF and proofs), the DPA 2018 s.62 consultations and disclosures CSV, and
the checkpoint history with its verification result.

The same report code as ``safeshare workspace report`` (broker/workspace/reports.py),
from the same sources: the audit log read from Kafka (shard 0), verified against
the trust anchor the checkpointer wrote under ``$SAFESHARE_HOME/keys`` (plus any
witnesses configured), the router's subject pseudonym key, the consultations
topic and the acknowledgements (break-glass reviews). Only users with the
``dpo`` role see these pages (403 for anyone else, whatever the URL); a report
from a log that does not verify says so and gives no lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from broker.audit.bundle import Bundle
from broker.audit.exceptions import AuditError
from broker.gateway.consultations import READER_KEY_FILE
from broker.keyfiles import SUBJECT_KEY_FILE
from broker.workspace import reports
from broker.workspace.render import DpoConfig, Workspace
from broker.workspace.views import _HEADERS, _page, _ws, signed_in

router = APIRouter(prefix="/workspace/dpo", include_in_schema=False)
PSEUDONYM_MAX = 200
T = TypeVar("T")


class NotReady(Exception):
    """A source the reports need is missing (one line saying which)."""


def _config(ws: Workspace) -> DpoConfig:
    if ws.config.dpo is None:
        raise NotReady("the workspace was started without the DPO's sources (keys directory)")
    return ws.config.dpo


def _trust(cfg: DpoConfig) -> reports.Trust:
    from broker.audit.checkpoint import origin_for_shard  # noqa: PLC0415
    from broker.audit.keystore import LogKeyStore  # noqa: PLC0415

    store = LogKeyStore(cfg.keys_dir, origin=origin_for_shard(cfg.shard), shard=cfg.shard)
    anchor = store.anchor()
    if anchor is None:
        raise NotReady("no trusted log key yet: the checkpointer has not written its anchor")
    return reports.Trust([anchor], cfg.witness_vkeys, cfg.quorum)


def _bundle(ws: Workspace, cfg: DpoConfig) -> Bundle:
    from broker.audit.stream import read_log  # noqa: PLC0415

    return read_log(ws.config.bootstrap, ws.config.topics, shard=cfg.shard)


def sar(ws: Workspace, pseudonym: str) -> reports.SubjectAccess:
    cfg = _config(ws)
    path = cfg.keys_dir / SUBJECT_KEY_FILE
    try:
        key = path.read_bytes()
    except OSError:
        raise NotReady("the router's subject pseudonym key is not readable here") from None
    trust = _trust(cfg)
    return reports.subject_access_report(
        _bundle(ws, cfg), pseudonym, key, trust,
        lambda glass: reports.read_reviews(ws.config.bootstrap, ws.config.topics, ws.codec,
                                           glass))


def s62(ws: Workspace) -> str:
    """The s.62 CSV, people named: the workspace's users, by the log's key of
    people's pseudonyms (``$SAFESHARE_HOME/keys/reader-pseudonym.key``)."""
    cfg = _config(ws)
    trust = _trust(cfg)
    consultations = reports.read_consultations(ws.config.bootstrap,
                                               ws.config.topics.consultations)
    key_file = cfg.keys_dir / READER_KEY_FILE
    names = (reports.reader_names(key_file.read_bytes(), ws.users)
             if key_file.is_file() else None)
    return reports.verified_s62(_bundle(ws, cfg), trust, consultations,
                                reports.law_enforcement(ws.config.policy), names)


def checkpoints(ws: Workspace) -> reports.CheckpointHistory:
    cfg = _config(ws)
    return reports.checkpoint_history(_bundle(ws, cfg), _trust(cfg))


def _subject(request: Request) -> str:
    return (request.query_params.get("subject") or "").strip()[:PSEUDONYM_MAX]


def _unavailable(request: Request, user: object, why: str) -> HTMLResponse:
    return _page(request, "missing.html", 503, user=user, what=f"Report not available: {why}.")


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    user = signed_in(request, "dpo")
    if isinstance(user, Response):
        return user
    return _page(request, "dpo.html", user=user)


@router.get("/subject-access", response_class=HTMLResponse)
async def subject_access(request: Request) -> Response:
    """The report as a page; links to its PDF and its proofs."""
    user = signed_in(request, "dpo")
    if isinstance(user, Response):
        return user
    subject = _subject(request)
    if not subject:
        return _page(request, "dpo.html", 422, user=user,
                     error="subject: give the child's pseudonym")
    try:
        r = await run_in_threadpool(sar, _ws(request), subject)
    except (NotReady, AuditError) as exc:
        return _unavailable(request, user, str(exc))
    return _page(request, "dpo_sar.html", user=user, r=r)


def _attachment(media: str, name: str) -> Callable[[object, bytes | str], Response]:
    """Respond with the report as the file ``name`` (whoever ``user`` is)."""
    return lambda _user, data: Response(data, media_type=media, headers={
        **_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


async def _dpo_report(
    request: Request, make: Callable[[Workspace], T], respond: Callable[[object, T], Response],
    *, unavailable: tuple[type[Exception], ...] = (NotReady, AuditError),
) -> Response:
    """A DPO-only report: ``make`` runs off the event loop and ``respond`` shows its
    result to the user; a source that is missing or a log that does not verify is
    the 503 page saying why instead."""
    user = signed_in(request, "dpo")
    if isinstance(user, Response):
        return user
    try:
        data = await run_in_threadpool(make, _ws(request))
    except unavailable as exc:
        return _unavailable(request, user, str(exc))
    return respond(user, data)


@router.get("/subject-access.pdf")
async def subject_access_pdf(request: Request) -> Response:
    subject = _subject(request)
    return await _dpo_report(
        request, lambda ws: reports.to_pdf(reports.subject_access_html(sar(ws, subject))),
        _attachment("application/pdf", "subject-access.pdf"),
        unavailable=(NotReady, AuditError, ImportError))


@router.get("/subject-access.proofs.json")
async def subject_access_proofs(request: Request) -> Response:
    """Every line's inclusion proof, for ``safeshare audit verify-proof`` offline."""
    subject = _subject(request)
    return await _dpo_report(request, lambda ws: sar(ws, subject).proofs_json(),
                             _attachment("application/json", "subject-access-proofs.json"))


def _s62_verified(ws: Workspace) -> str:
    try:
        return s62(ws)
    except AuditError as exc:
        raise NotReady(f"the audit log does not verify: {exc}") from exc


@router.get("/s62.csv")
async def s62_csv(request: Request) -> Response:
    return await _dpo_report(request, _s62_verified, _attachment(
        "text/csv; charset=utf-8", "s62-consultations-disclosures.csv"))


@router.get("/checkpoints", response_class=HTMLResponse)
async def checkpoint_history(request: Request) -> Response:
    return await _dpo_report(
        request, checkpoints,
        lambda user, h: _page(request, "dpo_checkpoints.html", user=user, h=h),
        unavailable=(NotReady,))
