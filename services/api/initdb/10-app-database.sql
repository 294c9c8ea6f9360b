-- Runs once, when the postgres container initialises its volume: the API's own database
-- beside Prefect's (POSTGRES_DB).
CREATE DATABASE app;
