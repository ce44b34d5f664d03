"""POST /api/v1/recommend."""

from recloop.core.settings import get_settings
from recloop.handlers.http import recommend
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(recommend.router)
lambda_handler = api_handler(app)
