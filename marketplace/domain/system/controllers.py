"""HTTP: health. Cheap by design: it never loads the model."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from sqlalchemy import text

from marketplace import jobs
from models import model_loaded
from models.encoder import MODEL_ID, packaged_model_dir


def _check_database(state: State) -> str:
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # reported, not raised: health must answer
        return f"error: {type(exc).__name__}"


def _check_broker(state: State) -> str:
    settings = state.settings
    if settings.broker == "stub":
        return "ok (in-process)"
    try:
        broker = jobs.get_broker(settings)
        broker.client.ping()
        return "ok (redis)"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def _check_model() -> dict[str, Any]:
    try:
        packaged_model_dir()
        installed = True
    except (ImportError, FileNotFoundError):
        installed = False
    return {"id": MODEL_ID, "installed": installed, "loaded": model_loaded()}


class SystemController(Controller):
    tags = ["system"]

    @get("/health", exclude_from_auth=True, sync_to_thread=True, summary="Liveness and dependencies")
    def health(self, state: State) -> Response[dict[str, Any]]:
        database, broker, model = _check_database(state), _check_broker(state), _check_model()
        ok = database == "ok" and broker.startswith("ok") and model["installed"]
        body = {"status": "ok" if ok else "degraded", "database": database, "broker": broker, "model": model}
        return Response(body, status_code=200 if ok else 503)
