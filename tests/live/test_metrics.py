"""The bulk-fed lag histogram: Prometheus ``le`` buckets, counted by hand."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from perpsim.live.metrics import BulkHistogram


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    return {(s.name, s.labels.get("le", "")): s.value for s in family.samples}


def test_bulk_histogram_counts_each_value_in_the_first_bucket_at_or_above_it() -> None:
    registry = CollectorRegistry()
    h = BulkHistogram("lag_seconds", "test", (0.01, 0.001), registry)  # bounds sorted on the way in
    h.observe_many([0.0005, 0.001, 0.002])
    h.observe_many([])
    h.observe_many([0.01, 7.0])
    got = _samples(registry)
    # 0.0005 and 0.001 (a bound counts as inside it) <= 0.001; 0.002 and 0.01 <= 0.01; 7.0 only in +Inf
    assert got[("lag_seconds_bucket", "0.001")] == 2
    assert got[("lag_seconds_bucket", "0.01")] == 4
    assert got[("lag_seconds_bucket", "+Inf")] == 5
    assert got[("lag_seconds_count", "")] == 5
    assert abs(got[("lag_seconds_sum", "")] - 7.0135) < 1e-12
