"""The trainer: NYC TLC trip-duration flows and their deployments."""
