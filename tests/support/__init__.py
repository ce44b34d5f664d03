"""Helpers the tests share: names of the emulated resources, event and model builders, stream batches."""
