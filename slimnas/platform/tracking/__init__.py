"""MLflow: the tracking store, and what the pipeline and the search job log there."""
