"""GET /api/v1/health, /api/v1/metrics, the model registry routes (/api/v1/mlops/models...), the online-learning
routes (/api/v1/mlops/online-learning/...) and /docs."""

from recloop.api import events, models_routes, online_routes, ops, recommend
from recloop.api.resolver import api_handler, build_resolver
from recloop.settings import get_settings

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(
    ops.router, models_routes.router, online_routes.router, events.router, recommend.router, swagger=True
)
lambda_handler = api_handler(app)
