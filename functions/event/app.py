"""POST /api/v1/event, /api/v1/events/batch, /api/v1/items."""

from recloop.api import events
from recloop.api.resolver import api_handler, build_resolver
from recloop.settings import get_settings

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(events.router)
lambda_handler = api_handler(app)
