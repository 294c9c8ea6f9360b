"""The autoscaler's /metrics, as the tests and the benchmark read them."""

from prometheus_client.parser import text_string_to_metric_families


def parse_autoscaler_metrics(text: str) -> dict[str, float]:
    """Sample name -> value of the `autoscaler_*` samples in Prometheus text."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("autoscaler_")
    }
