"""Admin views of the OCI cache: read-only, searchable, filterable."""

from django.contrib import admin

from mirror.admin import ReadOnlyAdmin

from .models import Manifest, Repository, Tag


class TagInline(admin.TabularInline):
    model = Tag
    fields = ("name", "digest", "media_type", "fetched_at", "pull_count", "last_pull")
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
    list_display = ("__str__", "digest", "media_type", "fetched_at", "pull_count", "last_pull")
    list_filter = ("repository__upstream", "media_type")
    search_fields = ("name", "repository__name", "digest")
    ordering = ("-pull_count",)


@admin.register(Manifest)
class ManifestAdmin(ReadOnlyAdmin):
    list_display = ("digest", "media_type", "size", "pull_count", "last_pull", "created")
    list_filter = ("media_type",)
    search_fields = ("digest",)
    exclude = ("body",)
    ordering = ("-last_pull",)
