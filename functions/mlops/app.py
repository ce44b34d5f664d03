"""The operator routes: the model registry (/api/v1/mlops/models...) and online learning
(/api/v1/mlops/online-learning/...), in a function of their own because its role may change the champion."""

from recloop.core.settings import get_settings
from recloop.handlers.http import model_registry, online
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(model_registry.router, online.router)
lambda_handler = api_handler(app)
