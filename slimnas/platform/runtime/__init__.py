"""The run-time services: Ray start-up and clean-up, staged folders, preflight checks, job submission."""
