"""HTTP edge: pydantic request/response models, routers and the resolver every API function uses."""
