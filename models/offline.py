"""The offline guard: Hugging Face libraries may only read local files in this process."""

from __future__ import annotations

import os

OFFLINE_VARS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def enforce_offline() -> None:
    """Force offline mode before any Hugging Face module is imported (they read these at import time)."""
    for name, value in OFFLINE_VARS.items():
        os.environ[name] = value
