"""Admin view of the Go cache: searchable, filterable, with actions to prewarm versions,
revalidate their modules' `@v/list` and `@latest`, and purge modules. Deleting a version
here purges it (its stored files too), as `DELETE /api/v1/modules/{id}/` does."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from mirror import prewarm
from mirror.admin import ReadOnlyAdmin
from mirror.errors import MirrorError

from . import cache
from .models import ModuleVersion


def _modules(rows: QuerySet[ModuleVersion]) -> list[str]:
    return sorted(set(rows.values_list("module", flat=True)))


@admin.register(ModuleVersion)
class ModuleVersionAdmin(ReadOnlyAdmin):
    list_display = (
        "module",
        "version",
        "zip_size",
        "download_count",
        "last_download",
        "verified_at",
        "created",
    )
    search_fields = ("module", "version")
    list_filter = ("last_download", "verified_at")
    ordering = ("-download_count",)
    actions = ("prewarm_versions", "refresh_lists", "purge_modules")

    @admin.action(description="Prewarm the selected versions")
    def prewarm_versions(self, request: HttpRequest, rows: QuerySet[ModuleVersion]) -> None:
        specs = [prewarm.ItemSpec("module", str(row)) for row in rows]
        try:
            job = prewarm.create_job(
                specs, source="admin", requested_by=request.user.get_username()
            )
        except prewarm.JobInvalid as e:
            problems = "; ".join(m for messages_ in e.errors.values() for m in messages_)
            self.message_user(request, f"Not prewarmed: {problems}", messages.ERROR)
            return
        url = reverse("admin:mirror_prewarmjob_change", args=[job.pk])
        self.message_user(
            request,
            format_html(
                'Prewarm job <a href="{}">#{}</a> started ({} items).', url, job.pk, len(specs)
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Refresh the modules' list and @latest now")
    def refresh_lists(self, request: HttpRequest, rows: QuerySet[ModuleVersion]) -> None:
        for module in _modules(rows):
            try:
                result = cache.refresh(module)
            except MirrorError as e:
                self.message_user(request, f"{module}: not refreshed: {e}", messages.ERROR)
                continue
            versions = " ".join(result.versions) if result.versions is not None else "not found"
            self.message_user(
                request,
                f"{module}: list {versions} ({result.list_cache or '-'}); "
                f"@latest {result.latest or 'not found'} ({result.latest_cache or '-'})",
                messages.SUCCESS,
            )

    @admin.action(description="Purge the modules (every cached version)", permissions=["delete"])
    def purge_modules(self, request: HttpRequest, rows: QuerySet[ModuleVersion]) -> None:
        for module in _modules(rows):
            purged = cache.purge_module(module)
            self.message_user(
                request,
                f"{module}: purged {purged.versions} versions, {purged.objects} files, "
                f"{purged.documents} cached answers",
                messages.SUCCESS,
            )

    def delete_model(self, request: HttpRequest, obj: ModuleVersion) -> None:
        cache.purge_version(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModuleVersion]) -> None:
        for row in queryset:
            cache.purge_version(row)
