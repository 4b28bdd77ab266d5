"""Admin views of the OCI cache: read-only, searchable, filterable; cached content is changed
only through the freshness services (registries/freshness.py): refresh, purge, pins, prewarm.

Deleting rows directly is not offered: it would leave manifests and blobs behind that nothing
links any more; "purge" removes those too.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from mirror import prewarm
from mirror.admin import ReadOnlyAdmin
from mirror.errors import MirrorError
from mirror.models import PrewarmJob

from . import freshness
from .models import Link, Manifest, Repository, Tag, TagHistory, TagPin
from .routing import client_name


def _purge_allowed(request: HttpRequest, model: str) -> bool:
    return request.user.has_perm(f"registries.delete_{model}")


class TagInline(admin.TabularInline):
    model = Tag
    fields = ("name", "accept_key", "digest", "media_type", "fetched_at", "pull_count")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


class TagHistoryInline(admin.TabularInline):
    model = TagHistory
    fields = ("name", "digest", "first_seen", "last_seen")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Repository)
class RepositoryAdmin(ReadOnlyAdmin):
    list_display = ("name", "upstream", "pull_count", "last_pull", "created")
    list_filter = ("upstream",)
    search_fields = ("name",)
    ordering = ("-pull_count",)
    inlines = [TagInline, TagHistoryInline]
    actions = ["refresh_now", "purge", "prewarm"]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return _purge_allowed(request, "repository")

    @admin.action(description="Refresh now (next pulls revalidate every tag)")
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Repository]) -> None:
        marked = sum(freshness.refresh_repository(repository) for repository in queryset)
        self.message_user(request, f"{marked} cached tag answers marked expired.")

    @admin.action(
        description="Purge (tags, pins, history, and manifests and blobs no other "
        "repository holds)",
        permissions=["purge"],
    )
    def purge(self, request: HttpRequest, queryset: QuerySet[Repository]) -> None:
        for repository in queryset.select_related("upstream"):
            name = str(repository)
            done = freshness.purge_repository(repository)
            kept = f", {done.blobs_in_use} kept (being filled)" if done.blobs_in_use else ""
            self.message_user(
                request,
                f"{name} purged: {done.tags} tags, {done.manifests} manifests, "
                f"{done.blobs} blobs{kept}.",
            )

    @admin.action(description="Prewarm (every cached tag, again from the upstream)")
    def prewarm(self, request: HttpRequest, queryset: QuerySet[Repository]) -> None:
        specs = [
            prewarm.ItemSpec("image", reference)
            for repository in queryset.select_related("upstream")
            for reference in _references(repository)
        ]
        if not specs:
            self.message_user(request, "No cached tags to prewarm.", messages.WARNING)
            return
        try:
            job = prewarm.create_job(
                specs,
                source=PrewarmJob.Source.ADMIN,
                requested_by=request.user.get_username(),
                refresh=True,
            )
        except prewarm.JobInvalid as e:
            problems = "; ".join(m for found in e.errors.values() for m in found)
            self.message_user(request, f"Nothing started: {problems}", messages.ERROR)
            return
        self.message_user(request, _job_message(job, len(specs)))


def _references(repository: Repository) -> list[str]:
    """The client-form references of a repository's cached tags."""
    route = freshness.route_of(repository)
    if route is None:
        return []
    name = client_name(route.upstream, route.repository)
    tags = repository.tags.exclude(accept_key="").values_list("name", flat=True).distinct()
    return [f"{name}:{tag}" for tag in sorted(tags)]


def _job_message(job: PrewarmJob, items: int) -> str:
    try:
        url = reverse("admin:mirror_prewarmjob_change", args=[job.pk])
    except NoReverseMatch:
        return f"Prewarm job {job.pk} started ({items} tags)."
    return format_html('Prewarm job <a href="{}">{}</a> started ({} tags).', url, job.pk, items)


@admin.register(Tag)
class TagAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "accept_key",
        "digest",
        "pinned",
        "upstream_current",
        "fetched_at",
        "pull_count",
    )
    list_filter = ("repository__upstream", "media_type")
    search_fields = ("name", "repository__name", "digest")
    ordering = ("-pull_count",)
    readonly_fields = ("pinned", "upstream_current", "history")
    actions = ["refresh_now", "pin_current", "unpin", "purge"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tag]:
        same = {"repository": OuterRef("repository"), "name": OuterRef("name")}
        pin = TagPin.objects.filter(**same).values("digest")[:1]
        seen = TagHistory.objects.filter(**same).order_by("-last_seen").values("digest")[:1]
        return (
            super()
            .get_queryset(request)
            .select_related("repository__upstream")
            .annotate(pinned_digest=Subquery(pin), upstream_digest=Subquery(seen))
        )

    def has_delete_permission(self, request, obj=None):
        return False

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return _purge_allowed(request, "tag")

    def has_pin_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registries.add_tagpin")

    @admin.display(description="pinned to")
    def pinned(self, tag: Tag) -> str:
        return tag.pinned_digest or "-"

    @admin.display(description="upstream current")
    def upstream_current(self, tag: Tag) -> str:
        return tag.upstream_digest or tag.digest

    @admin.display(description="history (latest first)")
    def history(self, tag: Tag) -> str:
        rows = TagHistory.objects.filter(repository_id=tag.repository_id, name=tag.name)
        return format_html(
            "<table><tr><th>digest</th><th>first seen</th><th>last seen</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((h.digest, h.first_seen, h.last_seen) for h in rows),
            ),
        )

    @admin.action(description="Refresh now (ask the upstream)")
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        for repository, name in _tag_names(queryset):
            try:
                freshness.refresh_tag(repository, name, now=True)
            except MirrorError as e:
                self.message_user(request, f"{repository.name}:{name}: {e}", messages.ERROR)
            else:
                self.message_user(request, f"{repository.name}:{name} refreshed.")

    @admin.action(description="Pin to the digest it has now", permissions=["pin"])
    def pin_current(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        for tag in queryset:
            digest = tag.pinned_digest or tag.digest
            try:
                freshness.pin(tag.repository, tag.name, digest, request.user.get_username())
            except (freshness.PinRefused, MirrorError) as e:
                self.message_user(request, f"{tag}: {e}", messages.ERROR)
            else:
                self.message_user(request, f"{tag} pinned to {digest}.")

    @admin.action(description="Unpin", permissions=["pin"])
    def unpin(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        removed = sum(
            freshness.unpin(repository, name) for repository, name in _tag_names(queryset)
        )
        self.message_user(request, f"{removed} pins removed.")

    @admin.action(description="Purge (cached answers, pin and history)", permissions=["purge"])
    def purge(self, request: HttpRequest, queryset: QuerySet[Tag]) -> None:
        names = _tag_names(queryset)
        for repository, name in names:
            freshness.purge_tag(repository, name)
        self.message_user(request, f"{len(names)} tags purged.")


def _tag_names(queryset: QuerySet[Tag]) -> list[tuple[Repository, str]]:
    """Each (repository, tag name) once, however many accept-type rows were selected."""
    seen: dict[tuple[int, str], tuple[Repository, str]] = {}
    for tag in queryset.select_related("repository__upstream"):
        seen.setdefault((tag.repository_id, tag.name), (tag.repository, tag.name))
    return list(seen.values())


class TagPinForm(forms.ModelForm):
    """A pin to any digest the repository knows (validated as the API does)."""

    class Meta:
        model = TagPin
        fields = ("repository", "name", "digest")

    def clean(self):
        data = super().clean()
        repository, digest = data.get("repository"), data.get("digest")
        if repository is not None and digest:
            try:
                freshness.check_pin(repository, digest)
            except freshness.PinRefused as e:
                self.add_error("digest", str(e))
            except MirrorError as e:
                self.add_error("digest", f"cannot be checked now: {e}")
        return data


@admin.register(TagPin)
class TagPinAdmin(admin.ModelAdmin):
    """Pins: add one to pin a tag to a digest of its history; delete it to unpin."""

    form = TagPinForm
    list_display = ("repository", "name", "digest", "upstream_current", "pinned_by", "created")
    list_select_related = ("repository__upstream",)
    search_fields = ("name", "repository__name", "digest")
    raw_id_fields = ("repository",)
    readonly_fields = ("pinned_by", "created")

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="upstream current")
    def upstream_current(self, pin: TagPin) -> str:
        return freshness.upstream_digest(pin.repository, pin.name) or "-"

    def save_model(self, request, obj, form, change):
        pinned = freshness.pin(obj.repository, obj.name, obj.digest, request.user.get_username())
        obj.pk, obj.pinned_by, obj.created = pinned.pk, pinned.pinned_by, pinned.created


@admin.register(TagHistory)
class TagHistoryAdmin(ReadOnlyAdmin):
    list_display = ("repository", "name", "digest", "first_seen", "last_seen")
    list_filter = ("repository__upstream",)
    list_select_related = ("repository__upstream",)
    search_fields = ("name", "repository__name", "digest")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Link)
class LinkAdmin(ReadOnlyAdmin):
    list_display = ("repository", "digest", "kind", "created")
    list_filter = ("kind", "repository__upstream")
    search_fields = ("digest", "repository__name")
    ordering = ("-created",)


@admin.register(Manifest)
class ManifestAdmin(ReadOnlyAdmin):
    list_display = ("digest", "media_type", "size", "pull_count", "last_pull", "created")
    list_filter = ("media_type",)
    search_fields = ("digest",)
    exclude = ("body",)
    ordering = ("-last_pull",)
