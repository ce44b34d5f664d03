"""GET /api/v1/health, /api/v1/metrics, the model registry routes (/api/v1/mlops/models...), the online-learning
routes (/api/v1/mlops/online-learning/...) and /docs."""

from recloop.core.settings import get_settings
from recloop.handlers.http import events, model_registry, online, ops, recommend
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(ops.router, model_registry.router, online.router, events.router, recommend.router, swagger=True)
lambda_handler = api_handler(app)
