"""Which routers each API function serves: the one list that the functions, /docs and the tests share."""

from __future__ import annotations

from recloop.handlers.http import drift, events, experiments, model_registry, online, recommend, retraining

# The operator routes (functions/mlops), in a function of their own because its role may change the champion.
MLOPS = (model_registry.router, online.router, experiments.router, retraining.router, drift.router)
# Routes served by other functions than OpsFunction, which includes them only so that /docs describes them all.
SERVED_OUTSIDE_OPS = (*MLOPS, events.router, recommend.router)
