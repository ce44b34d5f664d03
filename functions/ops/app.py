"""GET /api/v1/health, /api/v1/metrics and /docs: the public operational routes, whose role writes nothing.

Every other router is included only so that /docs describes the whole API; API Gateway sends those routes to their
own functions (the operator routes to functions/mlops, with the role that may change the champion).
"""

from recloop.core.settings import get_settings
from recloop.handlers.http import events, experiments, model_registry, online, ops, recommend, retraining
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
served_elsewhere = (
    model_registry.router,
    online.router,
    experiments.router,
    retraining.router,
    events.router,
    recommend.router,
)
app = build_resolver(ops.router, *served_elsewhere, swagger=True)
lambda_handler = api_handler(app)
