"""Helpers shared by the tests (tests/) and the benchmarks (bench/).

- `tlc`: generated months on disk (`write_month`), and `TlcServer`, a local HTTP server
  standing in for the TLC's bucket: byte ranges (or not), and per file `Quirks` (errors
  before the file, gzip on the fly, a reset mid-stream, slow), counting the bytes it sends.
- `prefect_api`: `PrefectApi`, a small REST client of the Prefect API that drives real runs,
  `FINAL_STATES`, and `prefect_schema_head` (the revision a migrated database is at).
- `metrics`: `parse_autoscaler_metrics`, the autoscaler's Prometheus /metrics as a dict.
- `faults`: what the fault tests share, local and in Compose: `wait_running`, `wait_final`,
  `ApiWatch` and `burst_of_triggers`.
- `reference`: the seed's reference pipeline, the oracle of tests and benchmarks.
- `apps`: the API and serving apps in-process over fakes (`FakePrefect`, `FakeDatabase`,
  `FakeRegistry`) put in through `app.dependency_overrides`: `api_app`, `serving_app`.
- `compose_config`: `resolve`, the Compose files as `docker-compose config` resolves them,
  and `env_file`, a `.env` with what they require.
- `imports`: `modules_after`, what a fresh interpreter has imported after some code.
- `bench`: `start_stack` (a whole local stack on free ports) and the percentiles `p50`,
  `p95` and `percentile`.

The one wait loop is `devstack.stack.wait_until`. Importable through configuration only:
pytest's `pythonpath` (pyproject.toml) and the Makefile's `PYTHONPATH` both list `tests`.
"""
