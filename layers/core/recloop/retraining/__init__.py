"""Retraining: when to retrain (drift, performance, volume, schedule, manual), the lock and the status."""
