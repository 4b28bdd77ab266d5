"""REST API of the Go cache (mounted by config/api.py under /api/v1/):

- `GET /modules/` (cached module versions with download counts; `?module=` filters),
  `GET|DELETE /modules/{id}/` (one version; DELETE purges it: admin scope);
- `POST /go/refresh/` `{"module"}`: revalidate `@v/list` and `@latest` now (prewarm scope);
- `POST /go/purge/` `{"module"}`: forget every cached version of a module (admin scope);
- `POST /go/purge-negative/` `{"module"?}`: forget cached "not found" answers of a module,
  or of every module (prewarm scope).

Prewarming modules is the core's `POST /prewarm/` (`"modules": [...]`).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from mirror.api.schema import ErrorSerializer

from . import cache
from .models import ModuleVersion
from .paths import InvalidPath, check_module_path

CACHE_STATES = ["HIT", "MISS", "STALE"]


class ModulePathField(serializers.CharField):
    """A module path as the go command checks it (case as users write it)."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 500)
        kwargs.setdefault("help_text", "A module path, e.g. golang.org/x/mod.")
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        try:
            return check_module_path(value)
        except InvalidPath as e:
            raise serializers.ValidationError(f"invalid module path: {e}") from None


class ModuleVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModuleVersion
        fields = [
            "id",
            "module",
            "version",
            "zip_size",
            "created",
            "download_count",
            "last_download",
            "verified_at",
        ]
        read_only_fields = fields


class ModuleFilterSerializer(serializers.Serializer):
    module = ModulePathField(required=False)


class ModuleRequestSerializer(serializers.Serializer):
    module = ModulePathField()


class OptionalModuleRequestSerializer(serializers.Serializer):
    module = ModulePathField(
        required=False,
        allow_null=True,
        help_text="A module path; leave it out (or null) for every module.",
    )


class CachedListSerializer(serializers.Serializer):
    versions = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="The versions `@v/list` names now; null when the upstreams do not have it.",
    )
    cache = serializers.ChoiceField(
        CACHE_STATES,
        allow_null=True,
        help_text="MISS: fetched now; STALE: the upstreams failed and the cached answer is "
        "kept; null: not found.",
    )


class CachedLatestSerializer(serializers.Serializer):
    version = serializers.CharField(
        allow_null=True, help_text="The version `@latest` names now; null when not found."
    )
    cache = serializers.ChoiceField(CACHE_STATES, allow_null=True, help_text="As for the list.")


class RefreshedSerializer(serializers.Serializer):
    module = serializers.CharField()
    list = CachedListSerializer(help_text="`@v/list`, as the upstreams answer it now.")
    latest = CachedLatestSerializer(help_text="`@latest`, as the upstreams answer it now.")


class PurgedSerializer(serializers.Serializer):
    module = serializers.CharField()
    versions = serializers.IntegerField(help_text="Cached module versions forgotten.")
    objects = serializers.IntegerField(help_text="Stored .info, .mod and .zip files deleted.")
    documents = serializers.IntegerField(
        help_text="Cached lists, @latest answers and checksum-database lookups forgotten."
    )


class PurgedNegativeSerializer(serializers.Serializer):
    module = serializers.CharField(allow_null=True)
    purged = serializers.IntegerField(help_text='Cached "not found" answers forgotten.')


@extend_schema(tags=["go"])
class ModuleVersionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Cached Go module versions, most downloaded first."""

    serializer_class = ModuleVersionSerializer
    required_scopes = {"destroy": "admin"}

    def get_queryset(self) -> QuerySet[ModuleVersion]:
        rows = ModuleVersion.objects.order_by("-download_count", "module", "version", "pk")
        if self.action == "list":
            query = ModuleFilterSerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            if module := query.validated_data.get("module"):
                rows = rows.filter(module=module)
        return rows

    @extend_schema(
        parameters=[OpenApiParameter("module", str, description="Only this module path (exact).")]
    )
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        description="Purge this version: its stored files, checksum-database lookup and row."
    )
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance: ModuleVersion) -> None:
        cache.purge_version(instance)


def _valid(request: Request, serializer: type[serializers.Serializer]) -> dict[str, Any]:
    """The request body as `serializer` accepts it (else a 400 with the messages)."""
    body = serializer(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


@extend_schema(tags=["go"])
class GoCacheViewSet(viewsets.GenericViewSet):
    """Freshness control of the Go cache."""

    serializer_class = ModuleRequestSerializer
    required_scopes = {"refresh": "prewarm", "purge": "admin", "purge_negative": "prewarm"}

    @extend_schema(
        request=ModuleRequestSerializer,
        responses={
            200: RefreshedSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No Go upstream serves it."),
        },
        description="Revalidate the module's `@v/list` and `@latest` with its upstreams now.",
    )
    @action(detail=False, methods=["post"])
    def refresh(self, request: Request) -> Response:
        module = _valid(request, ModuleRequestSerializer)["module"]
        result = cache.refresh(module)
        answer = {
            "module": module,
            "list": {"versions": result.versions, "cache": result.list_cache},
            "latest": {"version": result.latest, "cache": result.latest_cache},
        }
        return Response(RefreshedSerializer(answer).data)

    @extend_schema(
        request=ModuleRequestSerializer,
        responses={200: PurgedSerializer},
        description="Forget every cached version of the module, its list and @latest.",
    )
    @action(detail=False, methods=["post"])
    def purge(self, request: Request) -> Response:
        module = _valid(request, ModuleRequestSerializer)["module"]
        return Response(PurgedSerializer(cache.purge_module(module)).data)

    @extend_schema(
        request=OptionalModuleRequestSerializer,
        responses={200: PurgedNegativeSerializer},
        description='Forget cached "not found" answers (lists, @latest, checksum-database '
        "lookups) of the module, or of every module.",
    )
    @action(detail=False, methods=["post"], url_path="purge-negative")
    def purge_negative(self, request: Request) -> Response:
        module = _valid(request, OptionalModuleRequestSerializer).get("module")
        purged = cache.purge_not_found(module)
        return Response(PurgedNegativeSerializer({"module": module, "purged": purged}).data)


def register(router: DefaultRouter) -> None:
    """Add this app's viewsets to the API router."""
    router.register("modules", ModuleVersionViewSet, basename="module-version")
    router.register("go", GoCacheViewSet, basename="go")
