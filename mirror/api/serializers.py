"""What the core's API endpoints read and answer (mirror/api/views.py).

Bounds on every input (how many references, how long each) keep a request's cost known before
any reference is resolved; references themselves are checked by their ecosystem
(mirror.ecosystems, through mirror.prewarm.create_job), the same check as the admin's and the
command line's.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from .. import budgets, ecosystems
from ..models import (
    AlwaysWarm,
    Eviction,
    PrewarmItem,
    PrewarmJob,
    QuarantinedObject,
    Upstream,
    UpstreamBudget,
)

MAX_REFERENCES = 500  # per job, images and modules together
MAX_REFERENCE_LENGTH = 1024  # PrewarmItem.reference
MAX_PLATFORMS = 32
_PART = r"[a-z0-9][a-z0-9._-]{0,31}"
PLATFORM = re.compile(rf"^{_PART}/{_PART}(?:/{_PART})?$")  # os/arch[/variant]
PLATFORM_PATTERN = PLATFORM.pattern
ALL = "all"
KINDS = ("image", "module")  # the item kinds the API names ("images", "modules")

_PLATFORM_LIST = {"type": "array", "items": {"type": "string"}}


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": [ALL]},
            {
                "type": "array",
                "items": {"type": "string", "pattern": PLATFORM_PATTERN},
                "minItems": 1,
                "maxItems": MAX_PLATFORMS,
            },
        ],
        "description": 'Image platforms to warm: "all", or a list of "os/arch[/variant]".',
    }
)
class PlatformsField(serializers.Field):
    """`"all"` (stored as []) or a list of "os/arch[/variant]" (stored deduplicated)."""

    default_error_messages = {
        "invalid": 'expected "all" or a list of "os/arch[/variant]" strings',
        "empty": 'give "all" or at least one platform',
        "too_many": f"at most {MAX_PLATFORMS} platforms",
        "platform": 'not a platform "os/arch[/variant]": {value}',
    }

    def to_internal_value(self, data: Any) -> list[str]:
        if data == ALL:
            return []
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            self.fail("invalid")
        if not data:
            self.fail("empty")
        if len(data) > MAX_PLATFORMS:
            self.fail("too_many")
        for platform in data:
            if not PLATFORM.match(platform):
                self.fail("platform", value=platform[:100])
        return list(dict.fromkeys(data))

    def to_representation(self, value: list[str]) -> str | list[str]:
        return list(value) if value else ALL


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "enum": [ALL]}, _PLATFORM_LIST],
        "description": 'The image platforms: "all", or the list asked for.',
    }
)
class PlatformsOutField(PlatformsField):
    """The same value on the way out; jobs from the admin or a schedule are shown as stored."""


class ReferenceListField(serializers.ListField):
    def __init__(self, **kwargs: Any) -> None:
        child = serializers.CharField(max_length=MAX_REFERENCE_LENGTH)
        super().__init__(child=child, max_length=MAX_REFERENCES, required=False, **kwargs)


class PrewarmSerializer(serializers.Serializer):
    """A job to start: image and module references as clients pull them."""

    images = ReferenceListField(
        help_text='Image references as clients pull them: "alpine:3.19", '
        '"ghcr.io/acme/tool:v1", "nginx@sha256:…".'
    )
    modules = ReferenceListField(
        help_text='Go modules at a version or "@latest": "golang.org/x/mod@v0.14.0".'
    )
    platforms = PlatformsField(required=False, default=[])
    refresh = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Revalidate tags, lists and @latest now, even within their TTL.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for name in ("images", "modules"):
            attrs[name] = list(dict.fromkeys(attrs.get(name, [])))
        count = len(attrs["images"]) + len(attrs["modules"])
        if count == 0:
            raise serializers.ValidationError("give at least one image or module")
        if count > MAX_REFERENCES:
            raise serializers.ValidationError(f"at most {MAX_REFERENCES} references per job")
        return attrs


class ProgressSerializer(serializers.Serializer):
    """Counts of a job's items by status, and bytes warmed of those known so far."""

    items = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField()


class PrewarmItemSerializer(serializers.ModelSerializer):
    upstream = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    platforms = serializers.ListField(
        child=serializers.CharField(), help_text="[]: all platforms (images)."
    )

    class Meta:
        model = PrewarmItem
        fields = (
            "id",
            "kind",
            "reference",
            "upstream",
            "platforms",
            "status",
            "bytes_done",
            "bytes_total",
            "error",
            "attempts",
            "not_before",
            "started",
            "finished",
        )
        read_only_fields = fields


class PrewarmJobSummarySerializer(serializers.ModelSerializer):
    """A job without its items (the list)."""

    platforms = PlatformsOutField(read_only=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = PrewarmJob
        fields = (
            "id",
            "status",
            "source",
            "requested_by",
            "platforms",
            "refresh",
            "cancel_requested",
            "created",
            "started",
            "finished",
            "progress",
        )
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, job: PrewarmJob) -> dict[str, int]:
        return progress_of(job)


class PrewarmJobSerializer(PrewarmJobSummarySerializer):
    """A job with every item."""

    items = PrewarmItemSerializer(many=True, read_only=True)

    class Meta(PrewarmJobSummarySerializer.Meta):
        fields = (*PrewarmJobSummarySerializer.Meta.fields, "items")
        read_only_fields = fields


def progress_of(job: PrewarmJob) -> dict[str, int]:
    """From the list's annotations (`n_<status>`, `sum_bytes_*`) when present, else from the
    job's (prefetched) items."""
    statuses = [s.value for s in PrewarmItem.Status]
    if hasattr(job, "sum_bytes_done"):
        counts = {s: getattr(job, f"n_{s}") for s in statuses}
        done, total = job.sum_bytes_done or 0, job.sum_bytes_total or 0
    else:
        items = list(job.items.all())
        counts = {s: sum(1 for i in items if i.status == s) for s in statuses}
        done = sum(i.bytes_done for i in items)
        total = sum(i.bytes_total for i in items)
    return {"items": sum(counts.values()), **counts, "bytes_done": done, "bytes_total": total}


class BudgetSerializer(serializers.Serializer):
    """What the upstream last said of its rate limit (null: never said)."""

    limit = serializers.IntegerField(allow_null=True)
    remaining = serializers.IntegerField(allow_null=True)
    window_seconds = serializers.IntegerField(allow_null=True)
    blocked_until = serializers.DateTimeField(allow_null=True)
    updated = serializers.DateTimeField()
    defer_seconds = serializers.SerializerMethodField(
        help_text="How long prewarm items wait for this upstream now (0: they run); above 0, "
        "cached tags are served without revalidation (X-Cache: STALE)."
    )

    def get_defer_seconds(self, budget: UpstreamBudget) -> float:
        return budgets.defer_seconds(budget.upstream_id)


class UpstreamSerializer(serializers.ModelSerializer):
    """An upstream as clients and operators see it: never its credentials."""

    url = serializers.SerializerMethodField()
    budget = serializers.SerializerMethodField()

    class Meta:
        model = Upstream
        fields = ("name", "kind", "url", "prefix", "is_default", "enabled", "budget")
        read_only_fields = fields

    def get_url(self, upstream: Upstream) -> str:
        """The base URL without any user:password@ it was written with."""
        parts = urlsplit(upstream.url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))

    @extend_schema_field(BudgetSerializer(allow_null=True))
    def get_budget(self, upstream: Upstream) -> dict[str, Any] | None:
        budget = getattr(upstream, "budget", None)
        if budget is None:
            return None
        return BudgetSerializer(budget).data


class QuarantinedObjectSerializer(serializers.ModelSerializer):
    upstream = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = QuarantinedObject
        fields = ("id", "key", "upstream", "size", "reason", "quarantine_key", "detected")
        read_only_fields = fields


class EvictionSerializer(serializers.ModelSerializer):
    """Content taken out of the cache: by eviction, to keep a budget, or by an operator."""

    upstream = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = Eviction
        fields = (
            "id",
            "when",
            "upstream",
            "kind",
            "reference",
            "reason",
            "object_count",
            "bytes",
            "last_access",
        )
        read_only_fields = fields


class EvictionFilterSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=Eviction.Reason.choices, required=False)
    upstream = serializers.CharField(max_length=64, required=False)
    kind = serializers.ChoiceField(choices=KINDS, required=False)


class AlwaysWarmSerializer(serializers.ModelSerializer):
    """A reference the scheduled refresh keeps warm; stored as its ecosystem normalizes it."""

    kind = serializers.ChoiceField(choices=KINDS)
    reference = serializers.CharField(max_length=MAX_REFERENCE_LENGTH)
    platforms = PlatformsField(required=False, default=[])

    class Meta:
        model = AlwaysWarm
        fields = ("id", "kind", "reference", "platforms", "enabled", "created")
        read_only_fields = ("id", "created")
        validators: list[Any] = []  # uniqueness is checked on the normalized reference

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs.get("kind", getattr(self.instance, "kind", None))
        reference = attrs.get("reference", getattr(self.instance, "reference", ""))
        try:
            target = ecosystems.get(kind).resolve(reference)
        except ecosystems.InvalidReference as e:
            raise serializers.ValidationError({"reference": [str(e)]}) from None
        attrs["reference"] = target.reference
        same = AlwaysWarm.objects.filter(kind=kind, reference=target.reference)
        if self.instance is not None:
            same = same.exclude(pk=self.instance.pk)
        if same.exists():
            raise serializers.ValidationError(
                {"reference": [f"{kind} {target.reference} is already on the list"]}
            )
        return attrs


class JobCountsSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    partial = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class UpstreamStatsSerializer(serializers.Serializer):
    upstream = serializers.CharField(allow_null=True, help_text="null: a deleted upstream's")
    objects = serializers.IntegerField()
    bytes = serializers.IntegerField()
    reads = serializers.IntegerField()
    hit_ratio = serializers.FloatField(allow_null=True)


@extend_schema_serializer(many=False)
class StatsSerializer(serializers.Serializer):
    """Cache figures. `reads` counts the reads of stored objects whose reads are counted
    (OCI blobs); every such object was fetched from its upstream once, so the hit ratio is
    (reads - objects read) / reads: a lower bound (an object a prewarm job fetched counts
    its first client read as a miss). null when nothing was read."""

    objects = serializers.IntegerField()
    bytes = serializers.IntegerField()
    reads = serializers.IntegerField()
    hit_ratio = serializers.FloatField(allow_null=True)
    upstreams = UpstreamStatsSerializer(many=True)
    prewarm_jobs = JobCountsSerializer()
    quarantined = serializers.IntegerField()
