"""The operator routes: the model registry (/api/v1/mlops/models...), online learning
(/api/v1/mlops/online-learning/...) and experiments (/api/v1/mlops/experiments...), in a function of their own
because its role may change the champion."""

from recloop.core.settings import get_settings
from recloop.handlers.http import experiments, model_registry, online
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(model_registry.router, online.router, experiments.router)
lambda_handler = api_handler(app)
