"""Consumes the interaction stream (archive, features, buffer) and runs online updates; `{"action": "trigger"}`
runs one on demand."""

from recloop.core.settings import get_settings
from recloop.handlers.stream import handle_online_update

get_settings()  # a bad configuration fails the cold start, not the first batch
lambda_handler = handle_online_update
