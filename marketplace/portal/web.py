"""Portal plumbing: who is signed in (session cookie), page rendering, redirects, forms, flash messages."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from litestar import Request
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from marketplace.auth import Principal, lookup
from marketplace.db.models import Role
from marketplace.errors import DomainError
from marketplace.settings import Settings

SESSION_COOKIE = "relay_session"
FLASH_COOKIE = "relay_flash"
PAGE_SIZE = 20
# A submitted HTML form's fields (a list where a name repeats, as checkboxes do).
FormData = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]

HOME = {Role.CUSTOMER: "/tasks", Role.PROVIDER: "/offers", Role.PARTNER: "/referrals", Role.STAFF: "/review"}


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in account of a portal request."""

    principal: Principal
    display_name: str

    @property
    def role(self) -> Role:
        return self.principal.role

    @property
    def account_id(self) -> uuid.UUID:
        return self.principal.account_id

    @property
    def home(self) -> str:
        return HOME[self.role]


class SignInRequired(Exception):
    """A page needs a signed-in account: the visitor is sent to the sign-in page and back."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class NotForYou(DomainError):
    status, type, title = 403, "forbidden", "This page is for another kind of account"


def provide_viewer(request: Request[Any, Any, Any]) -> Viewer | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    found = lookup(request.app.state.db, token)
    return Viewer(*found) if found else None


def require(request: Request[Any, Any, Any], viewer: Viewer | None, *roles: Role) -> Viewer:
    if viewer is None:
        raise SignInRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    if roles and viewer.role not in roles:
        names = " or ".join(sorted(r.value for r in roles))
        raise NotForYou(f"This page is for {names} accounts; you are signed in as a {viewer.role.value}.")
    return viewer


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path on this site (never //host or a scheme): the sign-in page must not redirect elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


def session_cookie(settings: Settings, token: str | None) -> Cookie:
    """The sign-in cookie: HttpOnly (no script reads it), Secure, SameSite=Lax; ``None`` clears it."""
    return Cookie(key=SESSION_COOKIE, value=token or "", path="/", httponly=True, secure=settings.cookie_secure,
                  samesite="lax", max_age=int(settings.token_ttl_hours * 3600) if token else 0)


def flash_cookie(settings: Settings, message: str) -> Cookie:
    return Cookie(key=FLASH_COOKIE, value=quote(message[:300]), path="/", httponly=True,
                  secure=settings.cookie_secure, samesite="lax", max_age=60)


def redirect(path: str, settings: Settings | None = None, flash: str | None = None,
             cookies: Iterable[Cookie] = ()) -> Redirect:
    """303 See Other (a POST answered with a GET), optionally with a one-time message for the next page."""
    jar = list(cookies)
    if flash and settings is not None:
        jar.append(flash_cookie(settings, flash))
    return Redirect(path, status_code=303, cookies=jar)


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def render(request: Request[Any, Any, Any], template: str, viewer: Viewer | None, status: int = 200,
           **context: Any) -> Template:
    """A page (or, for an HTMX request of a partial template, just that fragment) with the shared context."""
    flash = request.cookies.get(FLASH_COOKIE)
    response = Template(template, context={"viewer": viewer, "path": request.url.path,
                                           "flash": unquote(flash) if flash else None, **context},
                        status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"  # pages show personal data: never kept by a shared cache
    return response


@dataclass
class Form:
    """Submitted values and errors, for re-rendering a form with each error next to its field."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""

    def get(self, name: str, default: str = "") -> str:
        value = self.values.get(name, default)
        if isinstance(value, list):
            value = value[-1] if value else default
        return str(value).strip() if value is not None else default

    def getall(self, name: str) -> list[str]:
        value = self.values.get(name, [])
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def absorb(self, exc: DomainError, fields: dict[str, str] | None = None) -> None:
        """Take a service's error: field errors go next to their field (renamed by ``fields``), the rest on
        top. The message in the summary is the service's own."""
        self.message = exc.detail
        for item in exc.errors:
            name = (fields or {}).get(item.get("field", ""), item.get("field", ""))
            self.add(name or "form", item.get("message", "invalid"))
        if not exc.errors:
            self.add("form", exc.detail)

    def __bool__(self) -> bool:
        return bool(self.errors)


@dataclass(frozen=True)
class Pager:
    """Which page of a list is shown (from ``?page=``, 1 or more); ``counted`` adds the list's length."""

    page: int
    size: int = PAGE_SIZE
    total: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "page", max(1, self.page))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    def counted(self, total: int) -> Pager:
        return replace(self, total=total)
