"""The core's REST API endpoints (mounted by config/api.py under /api/v1/): prewarm jobs, cache
figures, upstreams and their budgets, quarantined objects, evictions and the always-warm list.

Views parse, call one core function (mirror.prewarm), and answer; scopes are named per action
in `required_scopes` (mirror/api/auth.py: read < prewarm < admin).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from .. import prewarm
from ..models import (
    AlwaysWarm,
    Eviction,
    PrewarmItem,
    PrewarmJob,
    QuarantinedObject,
    StoredObject,
    Upstream,
)
from .auth import Caller
from .pagination import Pagination
from .serializers import (
    AlwaysWarmSerializer,
    EvictionFilterSerializer,
    EvictionSerializer,
    PrewarmJobSerializer,
    PrewarmJobSummarySerializer,
    PrewarmSerializer,
    QuarantinedObjectSerializer,
    StatsSerializer,
    UpstreamSerializer,
)

JSON_ONLY = [parsers.JSONParser]
Job = PrewarmJob.Status
ENDED = {Job.SUCCEEDED, Job.PARTIAL, Job.FAILED, Job.CANCELLED}

STATUS_FILTER = OpenApiParameter(
    "status",
    str,
    enum=[s.value for s in PrewarmJob.Status],
    description="Only jobs in this status.",
)


class StatusFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PrewarmJob.Status.choices, required=False)


@extend_schema_view(
    list=extend_schema(
        summary="List prewarm jobs, newest first", parameters=[STATUS_FILTER], tags=["prewarm"]
    ),
    retrieve=extend_schema(summary="A prewarm job with its items", tags=["prewarm"]),
    create=extend_schema(
        summary="Start a prewarm job",
        request=PrewarmSerializer,
        responses={201: PrewarmJobSerializer},
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                response=[201],
                required=True,
                description="The job's URL.",
            )
        ],
        tags=["prewarm"],
    ),
    cancel=extend_schema(
        summary="Cancel a prewarm job",
        description="Queued items end at once, running ones at their next progress check. "
        "Cancelling a job that has already ended changes nothing and answers the job as it "
        "is (200), so that a client may cancel in its cleanup without looking first.",
        request=None,
        responses={200: PrewarmJobSerializer},
        tags=["prewarm"],
    ),
)
class PrewarmJobViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Prewarm jobs: images (for chosen platforms or all) and Go modules, warmed by the Celery
    workers through the same fill path as a client pull."""

    parser_classes = JSON_ONLY
    required_scopes = {"create": "prewarm", "cancel": "prewarm"}
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[PrewarmJob]:
        jobs = PrewarmJob.objects.all()
        if self.action != "list":
            items = PrewarmItem.objects.select_related("upstream").order_by("id")
            return jobs.prefetch_related(Prefetch("items", queryset=items))
        counts = {
            f"n_{s.value}": Count("items", filter=Q(items__status=s.value))
            for s in PrewarmItem.Status
        }
        jobs = jobs.annotate(
            **counts,
            sum_bytes_done=Sum("items__bytes_done"),
            sum_bytes_total=Sum("items__bytes_total"),
        ).order_by("-created", "-id")  # a GROUP BY query ignores Meta.ordering
        wanted = StatusFilterSerializer(data=self.request.query_params)
        wanted.is_valid(raise_exception=True)
        if "status" in wanted.validated_data:
            jobs = jobs.filter(status=wanted.validated_data["status"])
        return jobs

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if self.action == "list":
            return PrewarmJobSummarySerializer
        if self.action == "create":
            return PrewarmSerializer
        return PrewarmJobSerializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        wanted = PrewarmSerializer(data=request.data)
        wanted.is_valid(raise_exception=True)
        data = wanted.validated_data
        platforms = tuple(data["platforms"])
        specs = [prewarm.ItemSpec("image", ref, platforms) for ref in data["images"]]
        specs += [prewarm.ItemSpec("module", ref) for ref in data["modules"]]
        caller: Caller = request.user
        try:
            job = prewarm.create_job(
                specs,
                source=PrewarmJob.Source.API,
                requested_by=caller.name[:150],
                platforms=list(platforms),
                refresh=data["refresh"],
            )
        except prewarm.JobInvalid as e:
            raise serializers.ValidationError(e.errors) from None
        job = self.get_queryset().get(pk=job.pk)
        body = PrewarmJobSerializer(job, context=self.get_serializer_context()).data
        location = request.build_absolute_uri(f"{job.pk}/")
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        if job.status not in ENDED:
            prewarm.cancel(job)
            job = self.get_queryset().get(pk=job.pk)
        return Response(PrewarmJobSerializer(job, context=self.get_serializer_context()).data)


@extend_schema_view(
    list=extend_schema(summary="Cache figures", responses=StatsSerializer, tags=["cache"])
)
class StatsViewSet(viewsets.ViewSet):
    """Objects and bytes cached per upstream, the hit ratio, prewarm jobs by status and the
    number of quarantined objects."""

    def list(self, request: Request) -> Response:
        per_upstream = (
            StoredObject.objects.values("upstream__name")
            .annotate(
                objects=Count("id"),
                bytes=Sum("size"),
                reads=Sum("access_count"),
                read_objects=Count("id", filter=Q(access_count__gt=0)),
            )
            .order_by("upstream__name")
        )
        upstreams = [
            {
                "upstream": row["upstream__name"],
                "objects": row["objects"],
                "bytes": row["bytes"] or 0,
                "reads": row["reads"] or 0,
                "hit_ratio": hit_ratio(row["reads"] or 0, row["read_objects"]),
            }
            for row in per_upstream
        ]
        reads = sum(u["reads"] for u in upstreams)
        read_objects = sum(row["read_objects"] for row in per_upstream)
        by_status = dict(PrewarmJob.objects.values_list("status").annotate(n=Count("id")))
        body = {
            "objects": sum(u["objects"] for u in upstreams),
            "bytes": sum(u["bytes"] for u in upstreams),
            "reads": reads,
            "hit_ratio": hit_ratio(reads, read_objects),
            "upstreams": upstreams,
            "prewarm_jobs": {s.value: by_status.get(s.value, 0) for s in PrewarmJob.Status},
            "quarantined": QuarantinedObject.objects.count(),
        }
        return Response(StatsSerializer(body).data)


def hit_ratio(reads: int, read_objects: int) -> float | None:
    """Reads served from the cache per read: each object read was fetched once (a miss)."""
    if reads <= 0:
        return None
    return max(0, reads - read_objects) / reads


@extend_schema_view(
    list=extend_schema(summary="Upstreams and their rate-limit budgets", tags=["cache"]),
    retrieve=extend_schema(summary="An upstream and its rate-limit budget", tags=["cache"]),
)
class UpstreamViewSet(viewsets.ReadOnlyModelViewSet):
    """Configured upstreams (edited in the admin or MIRROR_CONFIG), without credentials."""

    queryset = Upstream.objects.select_related("budget").order_by("kind", "position", "name")
    serializer_class = UpstreamSerializer
    pagination_class = Pagination
    lookup_field = "name"


@extend_schema_view(
    list=extend_schema(summary="Quarantined objects, newest first", tags=["cache"]),
    retrieve=extend_schema(summary="A quarantined object", tags=["cache"]),
)
class QuarantineViewSet(viewsets.ReadOnlyModelViewSet):
    """Cached content that failed re-verification: out of the cache, kept for the operator."""

    queryset = QuarantinedObject.objects.select_related("upstream")
    serializer_class = QuarantinedObjectSerializer
    pagination_class = Pagination


@extend_schema_view(
    list=extend_schema(
        summary="Evictions, newest first",
        description="Content taken out of the cache: the least recently pulled, while an "
        "upstream or the whole cache is over its budget, and operators' purges.",
        parameters=[
            OpenApiParameter(
                "reason",
                str,
                enum=[r.value for r in Eviction.Reason],
                description="Only evictions for this reason.",
            ),
            OpenApiParameter("upstream", str, description="Only this upstream's (its name)."),
            OpenApiParameter(
                "kind", str, enum=["image", "module"], description="Only images or modules."
            ),
        ],
        tags=["cache"],
    )
)
class EvictionViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """What eviction (mirror/eviction.py) and purges took out of the cache."""

    serializer_class = EvictionSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[Eviction]:
        evictions = Eviction.objects.select_related("upstream").order_by("-when", "-id")
        wanted = EvictionFilterSerializer(data=self.request.query_params)
        wanted.is_valid(raise_exception=True)
        data = wanted.validated_data
        if "reason" in data:
            evictions = evictions.filter(reason=data["reason"])
        if "upstream" in data:
            evictions = evictions.filter(upstream__name=data["upstream"])
        if "kind" in data:
            evictions = evictions.filter(kind=data["kind"])
        return evictions


@extend_schema_view(
    list=extend_schema(summary="The always-warm list", tags=["prewarm"]),
    retrieve=extend_schema(summary="An always-warm reference", tags=["prewarm"]),
    create=extend_schema(summary="Add an always-warm reference", tags=["prewarm"]),
    update=extend_schema(summary="Replace an always-warm reference", tags=["prewarm"]),
    partial_update=extend_schema(summary="Change an always-warm reference", tags=["prewarm"]),
    destroy=extend_schema(summary="Remove an always-warm reference", tags=["prewarm"]),
)
class AlwaysWarmViewSet(viewsets.ModelViewSet):
    """References the scheduled refresh keeps warm whatever their popularity (reads: read
    scope; changes: admin)."""

    queryset = AlwaysWarm.objects.order_by("kind", "reference")
    serializer_class = AlwaysWarmSerializer
    pagination_class = Pagination
    parser_classes = JSON_ONLY


def register(router: DefaultRouter) -> None:
    """Add this app's viewsets to the API router."""
    router.register("prewarm", PrewarmJobViewSet, basename="prewarm")
    router.register("stats", StatsViewSet, basename="stats")
    router.register("upstreams", UpstreamViewSet, basename="upstream")
    router.register("quarantine", QuarantineViewSet, basename="quarantine")
    router.register("always-warm", AlwaysWarmViewSet, basename="always-warm")
    router.register("evictions", EvictionViewSet, basename="eviction")
