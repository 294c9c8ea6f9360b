"""The autoscaler: follows a work pool's backlog with the number of agents
(`python -m autoscaler`)."""
