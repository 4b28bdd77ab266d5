"""Prometheus metrics: what every part of the mirror counts, in one place.

Counters and histograms are updated where things happen (the request middleware, the upstream
client, the fill path, eviction); gauges of cache contents and prewarm jobs are read from the
database when `/metrics` is scraped (`DatabaseCollector`). Label values are bounded sets
(ecosystem names, upstream names, cache results, status codes): never a repository, module or
client name.

Under gunicorn every worker process counts into its own files in PROMETHEUS_MULTIPROC_DIR
(config/gunicorn.py sets it before any worker imports prometheus_client, and clears it at
start); `exposition()` merges them. Without it (runserver, the Celery worker, tests in one
process) values live in this process's memory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

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
    "Upstream requests that failed, by kind: unreachable, timeout, not_found (404/410), denied "
    "(401/403), rate_limited (429), status_4xx and status_5xx (other statuses), invalid (an "
    "answer refused: too large, broken compression, a redirect loop), broken (a body cut off).",
    ["upstream", "kind"],
)
FILLS_IN_PROGRESS = Gauge(
    "entrepot_fills_in_progress",
    "Fills (upstream fetches being streamed into the cache) running in this process.",
    multiprocess_mode="livesum",
)
EVICTED_OBJECTS = Counter(
    "entrepot_evicted_objects",
    "Stored objects taken out of the cache by this process (the worker's periodic eviction, "
    "purges in the admin and API), by upstream and reason (upstream_budget, total_budget, "
    "purge). Every instance's total: entrepot_evictions_total, read from the database.",
    ["upstream", "reason"],
)
EVICTED_BYTES = Counter(
    "entrepot_evicted_bytes", "Bytes freed by eviction and purges.", ["upstream", "reason"]
)


# Upstream label of objects and evictions whose upstream was deleted (or never recorded).
NO_UPSTREAM = "none"


class DatabaseCollector:
    """Cache contents, prewarm jobs and evictions as recorded in the database, read when
    `/metrics` is scraped, at most every MIRROR_METRICS_DATABASE_SECONDS per process (the
    cache counts scan the stored-object index).

    These are shared facts, not this instance's: every instance reports the same values, so
    aggregate them with `max by (upstream)`, never `sum`. An unreachable database leaves them
    out of the answer (and is logged) rather than failing the scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = 0.0
        self._families: list[Metric] = []

    def describe(self) -> Iterable[Metric]:
        return ()  # no names to check at registration: they depend on nothing configured

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= settings.MIRROR_METRICS_DATABASE_SECONDS:
                try:
                    self._families = self._read()
                except DatabaseError as e:
                    log.warning("metrics: database unavailable: %s", type(e).__name__)
                    self._families = []
                self._read_at = time.monotonic()
            return list(self._families)

    @staticmethod
    def _read() -> list[Metric]:
        from django.db.models import Count, Sum

        from .models import Eviction, PrewarmJob, StoredObject, Upstream

        names = dict(Upstream.objects.values_list("id", "name"))
        objects = GaugeMetricFamily(
            "entrepot_cache_objects", "Objects in the cache, by upstream.", labels=["upstream"]
        )
        sizes = GaugeMetricFamily(
            "entrepot_cache_bytes", "Bytes in the cache, by upstream.", labels=["upstream"]
        )
        per_upstream = {name: (0, 0) for name in names.values()}
        rows = StoredObject.objects.order_by().values("upstream_id")
        for row in rows.annotate(count=Count("id"), size=Sum("size")):
            name = names.get(row["upstream_id"], NO_UPSTREAM)
            count, size = per_upstream.get(name, (0, 0))
            per_upstream[name] = (count + row["count"], size + (row["size"] or 0))
        for name, (count, size) in sorted(per_upstream.items()):
            objects.add_metric([name], count)
            sizes.add_metric([name], size)

        jobs = GaugeMetricFamily(
            "entrepot_prewarm_jobs", "Prewarm jobs, by status.", labels=["status"]
        )
        by_status = dict.fromkeys(PrewarmJob.Status.values, 0)
        rows = PrewarmJob.objects.order_by().values("status").annotate(count=Count("id"))
        by_status.update((row["status"], row["count"]) for row in rows)
        for status, count in by_status.items():
            jobs.add_metric([status], count)

        labels = ["upstream", "reason"]
        evictions = CounterMetricFamily(
            "entrepot_evictions",
            "Content taken out of the cache (image tags and manifests, module versions), by "
            "upstream and reason, as recorded in the database by every instance.",
            labels=labels,
        )
        evicted_bytes = CounterMetricFamily(
            "entrepot_evictions_freed_bytes", "Bytes freed by those evictions.", labels=labels
        )
        rows = Eviction.objects.order_by().values("upstream_id", "reason")
        for row in rows.annotate(count=Count("id"), size=Sum("bytes")):
            label = [names.get(row["upstream_id"], NO_UPSTREAM), row["reason"]]
            evictions.add_metric(label, row["count"])
            evicted_bytes.add_metric(label, row["size"] or 0)
        return [objects, sizes, jobs, evictions, evicted_bytes]


def _registry() -> CollectorRegistry:
    """What `/metrics` answers: every worker's values (or this process's) and the database's."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # a registry is itself a collector
    registry.register(DatabaseCollector())
    return registry


_exposed: CollectorRegistry | None = None
_exposed_lock = threading.Lock()


def exposition() -> tuple[bytes, str]:
    """(body, content type) of a scrape in the Prometheus text format."""
    global _exposed
    with _exposed_lock:
        if _exposed is None:
            _exposed = _registry()
    return generate_latest(_exposed), CONTENT_TYPE_LATEST
