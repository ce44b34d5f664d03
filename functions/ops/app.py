"""GET /api/v1/health, /api/v1/metrics, /api/v1/dashboard, /docs and /redoc: the public operational routes and
pages, whose role writes nothing.

Every other router is included only so that /docs describes the whole API; API Gateway sends those routes to their
own functions (the operator routes to functions/mlops, with the role that may change the champion).
"""

from recloop.core.settings import get_settings
from recloop.handlers.http import ops, pages, routers
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(ops.router, pages.router, *routers.SERVED_OUTSIDE_OPS, swagger=True)
lambda_handler = api_handler(app)
