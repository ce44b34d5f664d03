"""POST /api/v1/recommend."""

from recloop.api import recommend
from recloop.api.resolver import api_handler, build_resolver
from recloop.settings import get_settings

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(recommend.router)
lambda_handler = api_handler(app)
