"""Local AI models. Everything loads from files inside installed packages; nothing is fetched at run time."""

from models.offline import enforce_offline

enforce_offline()

from models.drafter import Drafter, DraftInput, DraftResult, ProviderInput  # noqa: E402
from models.encoder import Encoder, load_encoder, model_loaded  # noqa: E402

__all__ = [
    "DraftInput",
    "DraftResult",
    "Drafter",
    "Encoder",
    "ProviderInput",
    "enforce_offline",
    "load_encoder",
    "model_loaded",
]
