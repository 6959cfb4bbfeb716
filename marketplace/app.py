"""The Litestar application factory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import structlog
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from marketplace.auth import TokenAuthMiddleware
from marketplace.db.session import get_database
from marketplace.deps import provide_db_session, provide_settings
from marketplace.domain.accounts.controllers import AccountController
from marketplace.domain.categories.controllers import CategoryController
from marketplace.domain.offers.controllers import OfferController
from marketplace.domain.partners.controllers import PartnerController
from marketplace.domain.providers.controllers import ProviderController
from marketplace.domain.staff.controllers import StaffController
from marketplace.domain.system.controllers import SystemController
from marketplace.domain.tasks.controllers import TaskController
from marketplace.errors import EXCEPTION_HANDLERS, reject_nul_characters
from marketplace.portal import csrf_config, html_errors, portal_router, static_router, template_config
from marketplace.settings import Settings, get_settings

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def configure_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def create_app(settings: Settings | None = None, lifespans: list[Lifespan] | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.debug)
    db = get_database(settings.database_url)

    auth = DefineMiddleware(
        TokenAuthMiddleware,
        exclude=["^/schema", "^/health$", "^/static"],
        exclude_from_auth_key="exclude_from_auth",
    )
    return Litestar(
        route_handlers=[
            SystemController, AccountController, CategoryController, ProviderController, TaskController,
            OfferController, PartnerController, StaffController, portal_router(), static_router(),
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        state=State({"settings": settings, "db": db}),
        middleware=[auth],
        exception_handlers=html_errors(EXCEPTION_HANDLERS),
        template_config=template_config(),
        csrf_config=csrf_config(settings),
        before_request=reject_nul_characters,
        openapi_config=OpenAPIConfig(
            title="Relay API", version="1.0.0", path="/schema",
            components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
            security=[{"bearer": []}],
        ),
        cors_config=CORSConfig(allow_origins=[]),
        lifespan=list(lifespans or []),
        debug=settings.debug,
        request_max_body_size=1_048_576,
    )
