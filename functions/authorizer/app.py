"""The API's Lambda authorizer: verifies a client's bearer token and names the caller (principal, scope, user_id)."""

from recloop.core.settings import get_settings
from recloop.handlers.authorizer import handle_authorize

get_settings()  # a bad configuration fails the cold start, not the first request
lambda_handler = handle_authorize
