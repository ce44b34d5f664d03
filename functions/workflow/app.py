"""The drift-check and retrain state machines' tasks (all but training, which runs in TrainFunction)."""

from recloop.core.settings import get_settings
from recloop.handlers.workflow import handle_task

get_settings()  # a bad configuration fails the cold start, not the first invocation
lambda_handler = handle_task
