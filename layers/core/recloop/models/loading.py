"""Turn a stored bundle into a servable model; used at promotion (to refuse what cannot serve) and at serving."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from recloop.models.bundle import CorruptModelError, ModelBundle, ModelKind

# kind -> function building the in-memory model from a bundle; each kind's module registers itself.
LOADERS: dict[ModelKind, Callable[[ModelBundle], Any]] = {}
# kind -> the module that registers its loader, imported on first use (numpy stays off the cold start).
KIND_MODULES: dict[ModelKind, str] = {ModelKind.MF: "recloop.models.mf", ModelKind.LGBM: "recloop.models.ranker"}


def register_loader(kind: ModelKind) -> Callable[[Callable[[ModelBundle], Any]], Callable[[ModelBundle], Any]]:
    def decorate(loader: Callable[[ModelBundle], Any]) -> Callable[[ModelBundle], Any]:
        LOADERS[kind] = loader
        return loader

    return decorate


def load_model(bundle: ModelBundle) -> Any:
    """The model a bundle holds; CorruptModelError if its kind is unknown or its files do not load."""
    kind = bundle.metadata.kind
    if kind not in LOADERS and kind in KIND_MODULES:
        try:
            importlib.import_module(KIND_MODULES[kind])
        except ImportError as exc:  # e.g. a function deployed without the numeric layer
            # The import error names paths inside the function; it stays on the exception's cause, for the log.
            raise CorruptModelError(f"model kind {kind.value!r} cannot load in this function") from exc
    loader = LOADERS.get(kind)
    if loader is None:
        raise CorruptModelError(f"no loader for model kind {bundle.metadata.kind!r}")
    try:
        return loader(bundle)
    except CorruptModelError:
        raise
    except Exception as exc:  # any failure to load means the version cannot serve
        # What failed inside the loader stays on the exception's cause (logged), not in the message a client reads.
        raise CorruptModelError(f"{bundle.metadata.version} does not load ({type(exc).__name__})") from exc
