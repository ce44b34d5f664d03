"""The operator routes: the model registry (/api/v1/mlops/models...), online learning
(/api/v1/mlops/online-learning/...), experiments (/api/v1/mlops/experiments...), retraining
(/api/v1/mlops/retrain...) and drift (/api/v1/mlops/drift), in a function of their own because its role may change
the champion (recloop.handlers.http.routers.MLOPS)."""

from recloop.core.settings import get_settings
from recloop.handlers.http import routers
from recloop.handlers.http.resolver import api_handler, build_resolver

get_settings()  # a bad configuration fails the cold start, not the first request
app = build_resolver(*routers.MLOPS)
lambda_handler = api_handler(app)
