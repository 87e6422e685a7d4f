"""``POST /v1/oauth/token``: OAuth2 client credentials (RFC 6749 §4.4) for a bearer token."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from broker.gateway.errors import ErrorBody

router = APIRouter()
MAX_FORM = 4096


class Token(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


def _oauth_error(status: int, code: str, detail: str) -> JSONResponse:
    # RFC 6749 §5.2 names the error; the gateway's own shape carries it too.
    return JSONResponse({"error": code, "detail": detail, "problems": []}, status_code=status,
                        headers={"Cache-Control": "no-store"})


@router.post(
    "/v1/oauth/token", response_model=Token,
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["grant_type"],
            "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                           "client_id": {"type": "string"},
                           "client_secret": {"type": "string"}}}}}}},
    summary="A bearer token for a registered client (OAuth2 client credentials)",
)
async def token(request: Request) -> JSONResponse:
    body = await request.body()
    if len(body) > MAX_FORM:
        return _oauth_error(400, "invalid_request", f"form over {MAX_FORM} bytes")
    try:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), strict_parsing=False).items()}
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the form is not UTF-8")
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type",
                            "grant_type: only client_credentials is supported")
    client_id, secret = form.get("client_id"), form.get("client_secret")
    scheme, _, basic = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and basic:
        try:
            user, _, pw = base64.b64decode(basic, validate=True).decode("utf-8").partition(":")
            client_id, secret = unquote(user), unquote(pw)
        except (binascii.Error, UnicodeDecodeError):
            return _oauth_error(400, "invalid_request", "Authorization: malformed Basic")
    who = request.app.state.oauth_clients.authenticate(client_id or "", secret or "")
    if who is None:
        return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
    issuer = request.app.state.tokens
    return JSONResponse(
        Token(access_token=issuer.issue(who, client_id=client_id or ""), token_type="Bearer",
              expires_in=issuer.ttl_s).model_dump(),
        headers={"Cache-Control": "no-store"})
