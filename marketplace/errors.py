"""Domain errors and their problem-details (RFC 9457) rendering, with a stable ``type`` per error kind."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    status = 400
    type = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


class InvalidInput(DomainError):
    status, type, title = 422, "validation-error", "The request has invalid fields"


class NotFound(DomainError):
    status, type, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, type, title = 409, "conflict", "Conflict with the current state"


class IllegalTransition(Conflict):
    type, title = "illegal-transition", "This status change is not allowed"


class Unauthenticated(DomainError):
    status, type, title = 401, "unauthenticated", "Authentication required"


class Forbidden(DomainError):
    status, type, title = 403, "forbidden", "Not allowed for this account"


class TooManyAttempts(DomainError):
    status, type, title = 429, "too-many-attempts", "Too many attempts"


def problem(status: int, type_: str, title: str, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": f"/problems/{type_}", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _domain_handler(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    return problem(exc.status, exc.type, exc.title, exc.detail, exc.errors, exc.headers)


def _field_errors(extra: Any) -> list[dict[str, str]]:
    errors = []
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            errors.append({"field": str(item.get("key") or item.get("source") or "body"),
                           "message": str(item.get("message", "invalid value"))})
    return errors


def _validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors = _field_errors(exc.extra)
    detail = exc.detail if exc.detail and not errors else "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422 if errors else 400, "validation-error" if errors else "bad-request",
                   "The request has invalid fields" if errors else "Bad request", detail or "Invalid request",
                   errors)


_HTTP_TYPES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed for this account"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


def _http_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    type_, title = _HTTP_TYPES.get(exc.status_code, ("http-error", "Request failed"))
    return problem(exc.status_code, type_, title, str(exc.detail), headers=exc.headers)


def _internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("request.unhandled", path=request.url.path, exc_info=exc)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal-error", "Internal error",
                   "Something went wrong on our side; the request was not applied.")


async def reject_nul_characters(request: Request[Any, Any, Any]) -> Response[dict[str, Any]] | None:
    """NUL is never meaningful in our text and PostgreSQL refuses to store it: answer 422, not 500."""
    if "%00" in request.url.query or "%00" in request.url.path:
        return problem(422, "validation-error", "The request has invalid fields",
                       "The request contains a NUL character.", [{"field": "query", "message": "contains NUL"}])
    if request.method in {"POST", "PUT", "PATCH"}:
        body = await request.body()
        if b"\\u0000" in body or b"\x00" in body:
            return problem(422, "validation-error", "The request has invalid fields",
                           "Text may not contain NUL characters.", [{"field": "body", "message": "contains NUL"}])
    return None


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: _domain_handler,
    ValidationException: _validation_handler,
    NotAuthorizedException: _http_handler,
    PermissionDeniedException: _http_handler,
    NotFoundException: _http_handler,
    MethodNotAllowedException: _http_handler,
    HTTPException: _http_handler,
    HTTP_500_INTERNAL_SERVER_ERROR: _internal_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "MediaType", "problem"]
