"""The pipeline: its run, its config and its record (`pipeline.json`)."""
