"""Ingestion: the API path (stream first, then features) and the stream path (archive, features, buffer)."""
