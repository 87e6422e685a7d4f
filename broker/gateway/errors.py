"""The gateway's one error shape: ``{"error": CODE, "detail": LINE, "problems": [...]}``.

Every refusal is one JSON object with a stable ``error`` code, one line of
``detail`` and, for invalid input, one ``problems`` line per bad field (the
lines ``safeshare publish`` prints). Details never carry a field's value: it
may be a child's personal data.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    """What every refusal looks like."""

    error: str
    detail: str
    problems: list[str] = []


class ApiError(Exception):
    """A refusal with its status, one line and the bad fields."""

    def __init__(
        self,
        status: int,
        detail: str,
        problems: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = problems or []
        self.headers = headers or {}


def error_response(
    status: int, detail: str, problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": CODES.get(status, "error"), "detail": detail, "problems": problems or []}
    return JSONResponse(body, status_code=status, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    kind, *rest = loc or ("request",)
    name = ".".join(str(p) for p in rest)
    return f"{kind} {name}".strip() if kind in {"header", "query", "path"} else (name or kind)


def install(app: FastAPI) -> None:
    """Route every error of ``app`` to the one shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.detail, exc.problems, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_where(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}"
                    for e in exc.errors()]
        return error_response(422, problems[0] if len(problems) == 1 else
                              f"{len(problems)} problems", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None,
                              dict(exc.headers or {}))
