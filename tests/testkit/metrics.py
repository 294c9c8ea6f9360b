"""Prometheus /metrics, as the tests and the benchmark read them."""

from prometheus_client.parser import text_string_to_metric_families


def parse_autoscaler_metrics(text: str) -> dict[str, float]:
    """Sample name -> value of the `autoscaler_*` samples in Prometheus text."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("autoscaler_")
    }


def parse_metrics(text: str, prefix: str) -> dict[str, float]:
    """`name{label="value",...}` -> value of the samples named `prefix...`."""
    return {
        sample.name
        + "{"
        + ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
        + "}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    }
