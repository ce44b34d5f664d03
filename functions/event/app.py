"""POST /api/v1/event, /api/v1/events/batch, /api/v1/items."""

from recloop.core.settings import get_settings
from recloop.handlers.http import events
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(events.router)
lambda_handler = api_handler(app)
