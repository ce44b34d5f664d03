"""Consumes the interaction stream (archive, features, buffer) and runs online updates; `{"action": "trigger"}`
runs one on demand."""

from recloop.online_handler import handle_online_update
from recloop.settings import get_settings

get_settings()  # a bad configuration fails the cold start, not the first batch
lambda_handler = handle_online_update
