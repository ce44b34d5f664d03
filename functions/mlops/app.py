"""The operator routes: the model registry (/api/v1/mlops/models...), online learning
(/api/v1/mlops/online-learning/...), experiments (/api/v1/mlops/experiments...) and retraining
(/api/v1/mlops/retrain...), in a function of their own because its role may change the champion."""

from recloop.core.settings import get_settings
from recloop.handlers.http import experiments, model_registry, online, retraining
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(model_registry.router, online.router, experiments.router, retraining.router)
lambda_handler = api_handler(app)
