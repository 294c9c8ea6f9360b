"""The agent: a Prefect process worker that polls the work pool and runs the trainer's flows."""
