"""Trains a model version (invoked by the retrain state machine, or directly)."""

from recloop.core.settings import get_settings
from recloop.handlers.train import handle_train

get_settings()  # a bad configuration fails the cold start, not the first invocation
lambda_handler = handle_train
