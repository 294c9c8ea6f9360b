"""The API: start training runs and follow them over HTTP, without knowing Prefect."""
