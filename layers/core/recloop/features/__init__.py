"""Real-time features in Redis: the feature store, time decay, trending, and an in-process Redis for offline replays."""
