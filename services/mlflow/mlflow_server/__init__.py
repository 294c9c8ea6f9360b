"""The MLflow tracking server and model registry: `python -m mlflow_server` starts it."""
