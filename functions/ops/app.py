"""GET /api/v1/health, /api/v1/metrics and /docs (Swagger UI over every route of the API)."""

from recloop.api import events, ops, recommend
from recloop.api.resolver import api_handler, build_resolver
from recloop.settings import get_settings

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(ops.router, events.router, recommend.router, swagger=True)
lambda_handler = api_handler(app)
