"""The web portal: server-rendered pages (Jinja, HTMX for partial updates) for customers, providers, partners
and staff. Pages call the same domain services as the API; they sign in with an HttpOnly session cookie, and
every form is CSRF-protected (the API, which reads only bearer tokens, is not)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request, Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from marketplace.errors import DomainError
from marketplace.portal.accounts import AccountPages
from marketplace.portal.customers import CustomerPages
from marketplace.portal.partners import PartnerPages
from marketplace.portal.providers import ProviderPages
from marketplace.portal.staff import StaffPages
from marketplace.portal.web import SignInRequired, provide_viewer, redirect
from marketplace.settings import Settings

HERE = Path(__file__).parent.parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
API_PATHS = ("/api/", "/schema", "/health")
STATUS_LABELS = {
    "submitted": "Submitted", "routing": "Being matched", "routed": "Offered to providers",
    "needs_review": "With our staff", "assigned": "Provider assigned", "in_progress": "In progress",
    "delivered": "Delivered", "completed": "Completed", "cancelled": "Cancelled",
    "open": "Waiting for you", "accepted": "Accepted", "declined": "Declined", "expired": "Expired",
    "withdrawn": "Closed",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%-d %b %Y, %H:%M} UTC"


def _day(value: datetime | None) -> str:
    return "" if value is None else f"{value:%-d %b %Y}"


def _money(amount: Decimal | None, currency: str | None = None) -> str:
    if amount is None:
        return ""
    text = f"{amount:,.2f}".removesuffix(".00")
    return f"{currency} {text}" if currency else text


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True,
                      undefined=StrictUndefined)
    env.filters.update(when=_when, day=_day, money=_money, pct=lambda x: f"{float(x):.0%}",
                       status=lambda s: STATUS_LABELS.get(str(s), str(s).replace("_", " ").capitalize()))
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(env))


def csrf_config(settings: Settings) -> CSRFConfig:
    # The token travels in a hidden form field (and, for HTMX, a header); the cookie itself stays HttpOnly.
    return CSRFConfig(secret=settings.secret_key, cookie_name="relay_csrf", cookie_secure=settings.cookie_secure,
                      cookie_httponly=True, cookie_samesite="lax", exclude=[f"^{p}" for p in API_PATHS])


def _error_page(request: Request[Any, Any, Any], status: int, title: str, detail: str) -> Response[Any]:
    try:  # the signed-in header and menu, as on every other page
        viewer = provide_viewer(request)
    except Exception:  # the error may be the database itself: the page still renders, signed out
        viewer = None
    response = Template("error.html", status_code=status,
                        context={"viewer": viewer, "path": request.url.path, "flash": None, "title": title,
                                 "detail": detail, "status": status})
    response.headers.update(SECURITY_HEADERS)
    return response


def is_page(request: Request[Any, Any, Any]) -> bool:
    return not request.url.path.startswith(API_PATHS)


def html_errors(api_handlers: dict[Any, Any]) -> dict[Any, Any]:
    """The app's exception handlers, answering with an HTML page on portal paths and problem details on API
    paths (the same exception can reach either: a CSRF failure, a route that does not exist)."""

    def wrap(api_handler: Any) -> Any:
        def handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            if not is_page(request):
                return api_handler(request, exc)
            if isinstance(exc, DomainError):
                return _error_page(request, exc.status, exc.title, exc.detail)
            if isinstance(exc, PermissionDeniedException):
                return _error_page(request, 403, "This form has expired",
                                   "Go back, reload the page and try again. (The form's security token did not "
                                   "match: it was open too long, or it was sent from another site.)")
            if isinstance(exc, NotFoundException):
                return _error_page(request, 404, "Page not found", "There is nothing at this address.")
            if isinstance(exc, ValidationException):
                return _error_page(request, 400, "That address is not valid", "Check the link and try again.")
            if isinstance(exc, HTTPException):
                return _error_page(request, exc.status_code, "Request failed", str(exc.detail))
            api_handler(request, exc)  # logs it
            return _error_page(request, 500, "Something went wrong",
                               "Nothing was changed. Please try again in a moment.")

        return handler

    handlers = {kind: wrap(handler) for kind, handler in api_handlers.items()}
    # raised only by portal pages (marketplace.portal.web.require)
    handlers[SignInRequired] = lambda request, exc: redirect(f"/signin?next={exc.next_path}")
    return handlers


def _security_headers(response: Response[Any]) -> Response[Any]:
    response.headers.update(SECURITY_HEADERS)
    return response


def portal_router() -> Router:
    return Router(
        path="/",
        route_handlers=[AccountPages, CustomerPages, ProviderPages, PartnerPages, StaffPages],
        dependencies={"viewer": Provide(provide_viewer, sync_to_thread=True)},
        after_request=_security_headers,
        opt={"exclude_from_auth": True},  # the portal reads its own session cookie (marketplace.portal.web)
        include_in_schema=False,
    )


def static_router() -> Router:
    return create_static_files_router(path="/static", directories=[STATIC], opt={"exclude_from_auth": True},
                                      cache_control=CacheControlHeader(max_age=3600), include_in_schema=False)
