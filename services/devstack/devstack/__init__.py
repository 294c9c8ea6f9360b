"""The whole stack as local processes (`make dev`), also used by the integration tests."""
