"""Admin view of the Go cache: read-only, searchable, filterable."""

from django.contrib import admin

from mirror.admin import ReadOnlyAdmin

from .models import ModuleVersion


@admin.register(ModuleVersion)
class ModuleVersionAdmin(ReadOnlyAdmin):
    list_display = ("module", "version", "zip_size", "download_count", "last_download", "created")
    search_fields = ("module", "version")
    list_filter = ("last_download",)
    ordering = ("-download_count",)
