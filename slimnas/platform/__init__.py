"""Composition: the command line; later Ray Tune adapters, MLflow tracking, job submission. Nothing imports it."""
