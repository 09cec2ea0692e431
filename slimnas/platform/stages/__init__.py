"""The pipeline's stages and the jobs that run them: supernet training, the latency table, the search job, and
their progress lines."""
