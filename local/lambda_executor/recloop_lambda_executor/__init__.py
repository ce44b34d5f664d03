"""Runs Lambda functions as host Python subprocesses for LocalStack, from their deployed code and layers."""
