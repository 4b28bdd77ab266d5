"""Admin views of the OCI cache: read-only, searchable, filterable."""

from django.contrib import admin

from mirror.admin import ReadOnlyAdmin

from .models import Link, Manifest, Repository, Tag


class TagInline(admin.TabularInline):
    model = Tag
    fields = ("name", "accept_key", "digest", "media_type", "fetched_at", "pull_count")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Repository)
class RepositoryAdmin(ReadOnlyAdmin):
    list_display = ("name", "upstream", "pull_count", "last_pull", "created")
    list_filter = ("upstream",)
    search_fields = ("name",)
    ordering = ("-pull_count",)
    inlines = [TagInline]


@admin.register(Tag)
class TagAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "accept_key", "digest", "media_type", "fetched_at", "pull_count")
    list_filter = ("repository__upstream", "media_type")
    search_fields = ("name", "repository__name", "digest")
    ordering = ("-pull_count",)


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
