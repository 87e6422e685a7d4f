"""Who is calling: the principal named by the caller's verified client certificate,
or by an OAuth2 bearer token (client credentials, :mod:`broker.gateway.tokens`).

The TLS layer (:mod:`broker.gateway.server`) has already checked the chain to
the partnership CA; here the certificate's SAN URI becomes a
:class:`~broker.gateway.pki.Principal`. A caller acts only as itself: an
agency publishes only its own events, a subscriber reads and acknowledges
only its own feed. Anything else is 403, logged, and recorded as a REFUSED
leaf in the signed audit log and on the consultations topic, with the
principals' ids only (of the request, only its digest).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from broker.errors import SafeshareError
from broker.gateway.errors import ApiError
from broker.gateway.pki import CertificateError, Principal, principal_of
from broker.gateway.tokens import TokenIssuer

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)
def _principal(der: bytes) -> Principal:
    return principal_of(der)


def principal_in(scope: Any) -> Principal | None:
    """The principal of the connection ``scope`` belongs to, or None."""
    der = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_der")
    if not der:
        return None
    try:
        return _principal(der)
    except CertificateError:
        return None


async def caller(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal: the client certificate's,
    else a bearer token's (:mod:`broker.gateway.tokens`); 401 without either.
    A coroutine, though it never waits: FastAPI runs a plain function on a pool
    thread, a hand-off per request that cost more than the look-up."""
    p = principal_in(request.scope)
    if p is not None:
        return p
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    tokens: TokenIssuer | None = getattr(request.app.state, "tokens", None)
    if scheme.lower() == "bearer" and token and tokens is not None:
        p = tokens.verify(token.strip())
        if p is not None:
            return p
        raise ApiError(401, "the bearer token is not valid (expired, or from another gateway)",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    raise ApiError(401, "a client certificate or a bearer token naming one safeshare "
                   "principal is required", headers={"WWW-Authenticate": "Bearer"})


async def require(request: Request, who: Principal, kind: str, ident: str, action: str,
                  body: bytes = b"") -> None:
    """Refuse (403) unless ``who`` is the ``kind`` ``ident``; record the refusal
    (a REFUSED audit leaf with the digest of ``body``, the request's, and a
    consultations record), on a pool thread: the writes wait for acks=all. The
    caller is refused whether or not the record could be written (logged)."""
    if who.kind == kind and who.id == ident:
        return
    log.warning("refused: %s may not %s as %s:%s", who, action, kind, ident)
    recorder = getattr(request.app.state, "recorder", None)
    if recorder is not None:
        try:
            await run_in_threadpool(recorder.refusal, who, action, f"{kind}:{ident}", body)
        except SafeshareError as exc:
            log.error("the refusal of %s as %s:%s was not recorded: %s", who, kind, ident,
                      type(exc).__name__)
    raise ApiError(403, f"{who} may not {action} as {kind}:{ident}")
