"""The OCI cache in the REST API (mounted by config/api.py under /api/v1/): cached repositories
and tags with pull counts, tag history, pins, "refresh now" and purge.

A tag here is a repository's tag name (the cache keeps a row per set of accepted manifest
types; registries/tags.py); its id is that of its first row. Views validate, call one
service of registries/freshness.py, and answer. Scopes (mirror/api/auth.py): reading needs
"read", refreshing "prewarm", pinning and purging "admin".
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, parsers, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from mirror.upstreams import upstreams_of_kind

from . import freshness
from .models import Repository, Tag, TagHistory, TagPin
from .routing import client_name

JSON_ONLY = [parsers.JSONParser]
DIGEST_HELP = "A manifest digest, e.g. sha256:<64 hex digits>."


# -- serializers ---------------------------------------------------------------------------


class RepositorySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    upstream = serializers.CharField(source="upstream.name", help_text="The upstream's name.")
    name = serializers.CharField(help_text="The repository's name at the upstream.")
    client_name = serializers.SerializerMethodField(help_text="The name clients pull it by.")
    tags = serializers.IntegerField(source="tag_count", help_text="Cached tag names.")
    pull_count = serializers.IntegerField()
    last_pull = serializers.DateTimeField(allow_null=True)
    created = serializers.DateTimeField()

    def get_client_name(self, repository: Repository) -> str:
        for upstream in upstreams_of_kind("oci", include_disabled=True):
            if upstream.id == repository.upstream_id:
                return client_name(upstream, repository.name)
        return repository.name


class RepositoryPurgeSerializer(serializers.Serializer):
    tags = serializers.IntegerField(help_text="Tag names forgotten.")
    manifests = serializers.IntegerField(help_text="Manifests no other repository links.")
    blobs = serializers.IntegerField(help_text="Blobs no other repository links, deleted.")
    blobs_in_use = serializers.IntegerField(
        help_text="Unshared blobs kept because a fill is writing them."
    )


class RefreshSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="Cached tag answers marked expired.")


class HistorySerializer(serializers.Serializer):
    digest = serializers.CharField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()


class TagSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    repository = serializers.IntegerField(source="repository_id", help_text="Repository id.")
    repository_name = serializers.SerializerMethodField(help_text="The name clients pull.")
    upstream = serializers.CharField(source="repository.upstream.name")
    name = serializers.CharField(help_text="The tag.")
    digest = serializers.SerializerMethodField(
        help_text="What clients get: the pin, else the cached digest."
    )
    pinned_digest = serializers.CharField(allow_null=True, help_text="The pin, if any.")
    upstream_digest = serializers.SerializerMethodField(
        help_text="The digest the upstream last confirmed for this tag."
    )
    fetched_at = serializers.DateTimeField(
        source="last_fetched", help_text="When the upstream last confirmed the tag."
    )
    pull_count = serializers.IntegerField(source="pulls")
    last_pull = serializers.DateTimeField(source="last_pulled", allow_null=True)
    history = serializers.SerializerMethodField()

    def get_repository_name(self, tag: Tag) -> str:
        return RepositorySerializer().get_client_name(tag.repository)

    def get_digest(self, tag: Tag) -> str:
        return tag.pinned_digest or tag.cached_digest

    def get_upstream_digest(self, tag: Tag) -> str:
        return tag.history_digest or tag.cached_digest

    @extend_schema_field(HistorySerializer(many=True))
    def get_history(self, tag: Tag) -> list[dict[str, Any]]:
        """Every digest the upstream gave for the tag, latest first."""
        pages = self.context.get("history")
        if pages is not None:
            rows = pages.get((tag.repository_id, tag.name), [])
        else:
            rows = TagHistory.objects.filter(repository_id=tag.repository_id, name=tag.name)
        return HistorySerializer(rows, many=True).data


class PinSerializer(serializers.Serializer):
    digest = serializers.CharField(max_length=200, help_text=DIGEST_HELP)


class RepositoryFilterSerializer(serializers.Serializer):
    upstream = serializers.CharField(required=False, max_length=100)
    search = serializers.CharField(required=False, max_length=255)


class TagFilterSerializer(RepositoryFilterSerializer):
    repository = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    pinned = serializers.BooleanField(required=False, allow_null=True, default=None)


UPSTREAM_PARAM = OpenApiParameter("upstream", str, description="Only this upstream (its name).")
TAG_PARAMS = [
    UPSTREAM_PARAM,
    OpenApiParameter("search", str, description="Tag or repository names containing this."),
    OpenApiParameter("repository", int, description="Only this repository (its id)."),
    OpenApiParameter("pinned", bool, description="Only pinned (true) or unpinned (false) tags."),
]


# -- views ---------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="Cached repositories, most pulled first",
        parameters=[
            UPSTREAM_PARAM,
            OpenApiParameter("search", str, description="Names containing this."),
        ],
        tags=["oci"],
    ),
    retrieve=extend_schema(summary="A cached repository", tags=["oci"]),
    destroy=extend_schema(
        summary="Purge a repository",
        description="Forgets its tags, links, pins and history, and deletes the manifests and "
        "blobs no other repository links (except blobs a fill is writing). The next pull "
        "fetches everything anew.",
        responses={200: RepositoryPurgeSerializer},
        tags=["oci"],
    ),
    refresh=extend_schema(
        summary="Refresh a repository",
        description="Marks every cached tag (and tags/list answer) expired: the next pull of "
        "each revalidates it with the upstream.",
        request=None,
        responses={200: RefreshSerializer},
        tags=["oci"],
    ),
)
class RepositoryViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Repositories the upstreams confirmed, with their pull counts."""

    serializer_class = RepositorySerializer
    parser_classes = JSON_ONLY
    required_scopes = {"refresh": "prewarm", "destroy": "admin"}

    def get_queryset(self) -> QuerySet[Repository]:
        repositories = (
            Repository.objects.select_related("upstream")
            .annotate(tag_count=Count("tags__name", distinct=True))
            .order_by("-pull_count", "id")
        )
        if self.action != "list":
            return repositories
        wanted = RepositoryFilterSerializer(data=self.request.query_params)
        wanted.is_valid(raise_exception=True)
        if upstream := wanted.validated_data.get("upstream"):
            repositories = repositories.filter(upstream__name=upstream)
        if search := wanted.validated_data.get("search"):
            repositories = repositories.filter(name__icontains=search)
        return repositories

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        purged = freshness.purge_repository(self.get_object())
        return Response(RepositoryPurgeSerializer(purged).data)

    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        marked = freshness.refresh_repository(self.get_object())
        return Response(RefreshSerializer({"marked": marked}).data)


@extend_schema_view(
    list=extend_schema(
        summary="Cached tags, most pulled first", parameters=TAG_PARAMS, tags=["oci"]
    ),
    retrieve=extend_schema(summary="A cached tag with its history", tags=["oci"]),
    destroy=extend_schema(
        summary="Purge a tag",
        description="Forgets the tag's cached answers, pin and history; the next pull asks "
        "the upstream. Manifests stay (the repository holds them).",
        responses={204: None},
        tags=["oci"],
    ),
    pin=extend_schema(
        summary="Pin a tag to a digest",
        description="Clients get this digest for the tag, whatever the upstream says, until "
        "it is unpinned. The digest must be one the tag's history, the repository or the "
        "upstream knows in this repository (400 otherwise).",
        request=PinSerializer,
        responses={200: TagSerializer},
        tags=["oci"],
    ),
    unpin=extend_schema(
        summary="Unpin a tag",
        description="Clients get the upstream's digest again. Unpinning a tag that is not "
        "pinned changes nothing.",
        request=None,
        responses={200: TagSerializer},
        tags=["oci"],
    ),
    refresh=extend_schema(
        summary="Refresh a tag now",
        description="Asks the upstream what the tag points to now (for every set of "
        "accepted manifest types cached), whether or not it is pinned. 404 when the upstream "
        "no longer has the tag (its cached answers are then forgotten), 503 when the "
        "upstream fails.",
        request=None,
        responses={200: TagSerializer},
        tags=["oci"],
    ),
)
class TagViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Cached tags: what clients get, the pin, the upstream's current digest and history."""

    serializer_class = TagSerializer
    parser_classes = JSON_ONLY
    required_scopes = {"refresh": "prewarm", "pin": "admin", "unpin": "admin", "destroy": "admin"}

    def get_queryset(self) -> QuerySet[Tag]:
        tags = _tag_entries()
        if self.action != "list":
            return tags
        wanted = TagFilterSerializer(data=self.request.query_params)
        wanted.is_valid(raise_exception=True)
        data = wanted.validated_data
        if upstream := data.get("upstream"):
            tags = tags.filter(repository__upstream__name=upstream)
        if search := data.get("search"):
            tags = tags.filter(Q(name__icontains=search) | Q(repository__name__icontains=search))
        if repository := data.get("repository"):
            tags = tags.filter(repository_id=repository)
        if data.get("pinned") is not None:
            tags = tags.filter(pinned_digest__isnull=not data["pinned"])
        return tags

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None  # pagination is configured for the whole API
        context = {**self.get_serializer_context(), "history": _histories(page)}
        return self.get_paginated_response(TagSerializer(page, many=True, context=context).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tag = self.get_object()
        freshness.purge_tag(tag.repository, tag.name)
        return Response(status=204)

    @action(detail=True, methods=["post"])
    def pin(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        wanted = PinSerializer(data=request.data)
        wanted.is_valid(raise_exception=True)
        try:
            freshness.pin(
                tag.repository, tag.name, wanted.validated_data["digest"], str(request.user)
            )
        except freshness.PinRefused as e:
            raise serializers.ValidationError({"digest": [str(e)]}) from None
        return self._answer(tag)

    @action(detail=True, methods=["post"])
    def unpin(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        freshness.unpin(tag.repository, tag.name)
        return self._answer(tag)

    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        freshness.refresh_tag(tag.repository, tag.name, now=True)
        return self._answer(tag)

    def _answer(self, tag: Tag) -> Response:
        """The tag as it is now (its first row may have changed: looked up by name)."""
        entry = _tag_entries().filter(repository_id=tag.repository_id, name=tag.name).first()
        if entry is None:  # gone meanwhile (purged, or dropped by the upstream)
            entry = self.get_object()
        return Response(TagSerializer(entry, context=self.get_serializer_context()).data)


def _tag_entries() -> QuerySet[Tag]:
    """One Tag row per (repository, tag name), its first, with the figures of all its rows."""
    same = Tag.objects.filter(repository=OuterRef("repository"), name=OuterRef("name"))
    first = same.order_by("pk").values("pk")[:1]
    latest = same.order_by("-fetched_at", "-pk")
    totals = same.order_by().values("name")
    pin = TagPin.objects.filter(repository=OuterRef("repository"), name=OuterRef("name"))
    seen = TagHistory.objects.filter(repository=OuterRef("repository"), name=OuterRef("name"))
    return (
        Tag.objects.filter(pk=Subquery(first))
        .select_related("repository__upstream")
        .annotate(
            pinned_digest=Subquery(pin.values("digest")[:1]),
            cached_digest=Subquery(latest.values("digest")[:1]),
            history_digest=Subquery(seen.order_by("-last_seen", "-pk").values("digest")[:1]),
            last_fetched=Subquery(latest.values("fetched_at")[:1]),
            pulls=Subquery(totals.annotate(n=Sum("pull_count")).values("n")[:1]),
            last_pulled=Subquery(totals.annotate(t=Max("last_pull")).values("t")[:1]),
        )
        .order_by("-pulls", "pk")
    )


def _histories(tags: list[Tag]) -> dict[tuple[int, str], list[TagHistory]]:
    """The history of every tag on a page, in one query."""
    wanted = Q()
    for tag in tags:
        wanted |= Q(repository_id=tag.repository_id, name=tag.name)
    found: dict[tuple[int, str], list[TagHistory]] = {}
    if tags:
        for row in TagHistory.objects.filter(wanted).order_by("-last_seen", "-pk"):
            found.setdefault((row.repository_id, row.name), []).append(row)
    return found


def register(router: DefaultRouter) -> None:
    """Add this app's viewsets to the API router."""
    router.register("repositories", RepositoryViewSet, basename="repository")
    router.register("tags", TagViewSet, basename="tag")
