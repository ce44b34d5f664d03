"""The model registry: immutable versions in S3 and the champion pointer."""
