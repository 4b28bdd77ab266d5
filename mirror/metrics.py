"""Prometheus metrics: what every part of the mirror counts, in one place.

Counters and histograms are updated where things happen (the request middleware, the upstream
client, the fill path, eviction); gauges of cache contents and prewarm jobs are read from the
database when `/metrics` is scraped. Label values are bounded sets (ecosystem names, upstream
names, cache results, status codes): never a repository, module or client name.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "entrepot_requests",
    "Client requests answered, by ecosystem (oci, go, sumdb, api, other), upstream, cache "
    "result (hit, miss, stale, none) and status code.",
    ["ecosystem", "upstream", "cache", "status"],
)
BYTES_SERVED = Counter(
    "entrepot_served_bytes", "Body bytes sent to clients.", ["ecosystem", "upstream", "cache"]
)
BYTES_FETCHED = Counter(
    "entrepot_upstream_fetched_bytes", "Body bytes read from upstreams.", ["upstream"]
)
UPSTREAM_LATENCY = Histogram(
    "entrepot_upstream_request_seconds",
    "Time from sending a request to an upstream to its answer's head.",
    ["upstream", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_ERRORS = Counter(
    "entrepot_upstream_errors",
    "Upstream requests that failed, by kind (unreachable, timeout, status_4xx, status_5xx, "
    "rate_limited, invalid).",
    ["upstream", "kind"],
)
FILLS_IN_PROGRESS = Gauge(
    "entrepot_fills_in_progress",
    "Fills (upstream fetches being streamed into the cache) running in this process.",
    multiprocess_mode="livesum",
)
EVICTED_OBJECTS = Counter(
    "entrepot_evicted_objects",
    "Stored objects taken out of the cache, by upstream and reason "
    "(upstream_budget, total_budget, purge).",
    ["upstream", "reason"],
)
EVICTED_BYTES = Counter(
    "entrepot_evicted_bytes", "Bytes freed by eviction and purges.", ["upstream", "reason"]
)
