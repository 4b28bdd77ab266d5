"""Admin: upstreams (editable; credentials write-only) with their rate-limit budgets, stored
objects and quarantined ones (read-only), prewarm jobs (a form to start one, progress bars,
cancel), the always-warm list, and API tokens (shown once, at creation)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import IntegrityError, transaction
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import access, ecosystems, prewarm, tokens
from .models import (
    AlwaysWarm,
    ApiToken,
    Eviction,
    FillLease,
    PrewarmItem,
    PrewarmJob,
    PullToken,
    QuarantinedObject,
    StoredObject,
    Upstream,
    UpstreamBudget,
)

JOB_ENDED = (
    PrewarmJob.Status.SUCCEEDED,
    PrewarmJob.Status.PARTIAL,
    PrewarmJob.Status.FAILED,
    PrewarmJob.Status.CANCELLED,
)
REFRESH_SECONDS = 2  # how often a running job's page reloads itself
ACCESS_FIELDS = ("private", "allowed_users", "allowed_groups")


class ReadOnlyAdmin(admin.ModelAdmin):
    """The cache is written by the fill path only: operators browse it, never edit it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class UpstreamForm(forms.ModelForm):
    url = forms.URLField(assume_scheme="https", max_length=500)
    # Write-only: the stored password is never rendered; leaving the field empty keeps it.
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the current value. Prefer password_env.",
    )

    class Meta:
        model = Upstream
        fields = "__all__"

    def clean_password(self):
        value = self.cleaned_data.get("password")
        if not value and self.instance.pk:
            return self.instance.password
        return value or ""


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    form = UpstreamForm
    list_display = (
        "name",
        "kind",
        "url",
        "prefix",
        "is_default",
        "enabled",
        "position",
        "budget_remaining",
        "budget_blocked_until",
        "cache_usage",
    )
    list_filter = ("kind", "enabled", "is_default")
    list_select_related = ("budget",)
    search_fields = ("name", "url", "prefix")
    readonly_fields = ("created", "updated", "cache_usage")
    filter_horizontal = ("allowed_users", "allowed_groups")

    def get_fieldsets(self, request: HttpRequest, obj: Upstream | None = None) -> list:
        """Everything, then who may pull (mirror/access.py) in a section of its own."""
        fields = [f for f in self.get_fields(request, obj) if f not in ACCESS_FIELDS]
        access_section = {
            "fields": ACCESS_FIELDS,
            "description": "A private upstream is pulled only by superusers, the users and the "
            "members of the groups below (with pull tokens, see Pull tokens); to anyone else "
            "its content does not exist. Public upstreams: anyone, anonymous included.",
        }
        return [(None, {"fields": fields}), ("Access", access_section)]

    @admin.display(description="budget (remaining/limit)")
    def budget_remaining(self, obj: Upstream) -> str:
        budget = _budget(obj)
        if budget is None or budget.remaining is None:
            return "-"
        return f"{budget.remaining}/{budget.limit if budget.limit is not None else '?'}"

    @admin.display(description="blocked until")
    def budget_blocked_until(self, obj: Upstream) -> object:
        budget = _budget(obj)
        return budget.blocked_until if budget and budget.blocked_until else "-"

    @admin.display(description="cache (used / budget)")
    def cache_usage(self, obj: Upstream) -> str:
        """Bytes stored for the upstream against its budget (mirror/eviction.py)."""
        if obj.pk is None:
            return "-"
        used = StoredObject.objects.filter(upstream=obj).aggregate(size=Sum("size"))["size"]
        budget = filesizeformat(obj.max_bytes) if obj.max_bytes is not None else "no budget"
        return f"{filesizeformat(used or 0)} / {budget}"


def _budget(upstream: Upstream) -> UpstreamBudget | None:
    try:
        return upstream.budget
    except UpstreamBudget.DoesNotExist:
        return None


@admin.register(UpstreamBudget)
class UpstreamBudgetAdmin(ReadOnlyAdmin):
    list_display = ("upstream", "remaining", "limit", "window_seconds", "blocked_until", "updated")
    list_select_related = ("upstream",)


@admin.register(StoredObject)
class StoredObjectAdmin(ReadOnlyAdmin):
    list_display = ("key", "size", "upstream", "created", "last_access", "access_count")
    list_filter = ("upstream",)
    search_fields = ("key",)
    ordering = ("-last_access",)


@admin.register(QuarantinedObject)
class QuarantinedObjectAdmin(ReadOnlyAdmin):
    list_display = ("key", "upstream", "size", "reason", "detected")
    list_filter = ("upstream",)
    search_fields = ("key", "reason")


@admin.register(FillLease)
class FillLeaseAdmin(ReadOnlyAdmin):
    list_display = ("key", "owner", "expires_at", "size")


@admin.register(Eviction)
class EvictionAdmin(ReadOnlyAdmin):
    """What eviction (mirror/eviction.py) and operators' purges took out of the cache."""

    list_display = (
        "when",
        "kind",
        "reference",
        "upstream",
        "reason",
        "object_count",
        "freed",
        "last_access",
    )
    list_filter = ("reason", "kind", "upstream")
    list_select_related = ("upstream",)
    search_fields = ("reference",)
    date_hierarchy = "when"

    @admin.display(description="freed", ordering="bytes")
    def freed(self, obj: Eviction) -> str:
        return filesizeformat(obj.bytes)


# --- Prewarm jobs.


def progress_bar(done: int, total: int, percent: int) -> str:
    """A <progress> bar with its percentage and the bytes it stands for."""
    figures = f"{filesizeformat(done)} / {filesizeformat(total)}" if total else ""
    return format_html(
        '<progress value="{}" max="100" style="width:10em">{}%</progress> '
        '<span class="progress-text">{}%</span> <span class="quiet">{}</span>',
        percent,
        percent,
        percent,
        figures,
    )


def item_percent(item: PrewarmItem) -> int:
    if item.status == PrewarmItem.Status.SUCCEEDED:
        return 100
    if item.bytes_total:
        return min(99, item.bytes_done * 100 // item.bytes_total)
    return 0


def job_percent(job: PrewarmJob, items: list[PrewarmItem]) -> int:
    """Bytes done over bytes known across the items; items ended over items while no
    sizes are known yet. 100 only once every item succeeded."""
    if job.status == PrewarmJob.Status.SUCCEEDED:
        return 100
    done = sum(i.bytes_done for i in items)
    total = sum(i.bytes_total for i in items)
    if total:
        return min(99, done * 100 // total)
    ended = sum(i.status in prewarm.ENDED for i in items)
    return ended * 100 // len(items) if items else 0


class PrewarmItemInline(admin.TabularInline):
    model = PrewarmItem
    fields = (
        "kind",
        "reference",
        "upstream",
        "platforms",
        "status",
        "progress",
        "error",
        "attempts",
        "not_before",
        "started",
        "finished",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="progress")
    def progress(self, item: PrewarmItem) -> str:
        return progress_bar(item.bytes_done, item.bytes_total, item_percent(item))

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PrewarmStartForm(forms.Form):
    """What an operator asks to warm: references as clients pull them."""

    images = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text="One per line, as pulled: alpine:3.19, ghcr.io/org/tool:v1, nginx@sha256:…",
    )
    modules = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text="One per line: golang.org/x/mod@v0.14.0, example.com/m@latest",
    )
    platforms = forms.CharField(
        initial="all",
        max_length=1000,
        help_text='"all", or a comma-separated list such as linux/amd64, linux/arm64',
    )
    refresh = forms.BooleanField(
        required=False, help_text="Revalidate tags, lists and @latest even within their TTL."
    )

    def clean_platforms(self) -> list[str]:
        text = self.cleaned_data["platforms"].strip()
        if text.lower() in ("", "all"):
            return []
        platforms = [p.strip() for p in text.split(",") if p.strip()]
        bad = [p for p in platforms if p.count("/") not in (1, 2) or " " in p]
        if bad:
            raise forms.ValidationError(f"not a platform (os/arch[/variant]): {', '.join(bad)}")
        return platforms

    def specs(self) -> list[prewarm.ItemSpec]:
        platforms = tuple(self.cleaned_data.get("platforms") or ())
        images = self.cleaned_data.get("images", "").splitlines()
        modules = self.cleaned_data.get("modules", "").splitlines()
        return [prewarm.ItemSpec("image", r.strip(), platforms) for r in images if r.strip()] + [
            prewarm.ItemSpec("module", r.strip()) for r in modules if r.strip()
        ]

    def clean(self) -> dict:
        data = super().clean()
        if not self.errors and not self.specs():
            raise forms.ValidationError("Name at least one image or module.")
        return data


@admin.register(PrewarmJob)
class PrewarmJobAdmin(ReadOnlyAdmin):
    """Jobs are read-only: they are started with the add form (or the API, the CLI, the
    schedule), and change only as their items run."""

    list_display = (
        "__str__",
        "status",
        "source",
        "requested_by",
        "created",
        "progress",
        "items_done",
    )
    list_filter = ("status", "source")
    search_fields = ("requested_by", "items__reference")
    readonly_fields = (
        "status",
        "progress",
        "items_done",
        "source",
        "requested_by",
        "platforms",
        "refresh",
        "cancel_requested",
        "created",
        "started",
        "finished",
    )
    fields = readonly_fields
    inlines = [PrewarmItemInline]
    actions = ["cancel_jobs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PrewarmJob]:
        return super().get_queryset(request).prefetch_related("items")

    def has_add_permission(self, request, obj=None):
        return request.user.has_perm("mirror.add_prewarmjob")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mirror.change_prewarmjob")

    @admin.display(description="progress")
    def progress(self, job: PrewarmJob) -> str:
        items = list(job.items.all())
        done = sum(i.bytes_done for i in items)
        total = sum(i.bytes_total for i in items)
        return progress_bar(done, total, job_percent(job, items))

    @admin.display(description="items done")
    def items_done(self, job: PrewarmJob) -> str:
        items = list(job.items.all())
        ended = sum(i.status in prewarm.ENDED for i in items)
        return f"{ended}/{len(items)}"

    @admin.action(description="Cancel the selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[PrewarmJob]) -> None:
        jobs = list(queryset.exclude(status__in=JOB_ENDED))
        for job in jobs:
            prewarm.cancel(job)
        self.message_user(request, f"Cancelled {len(jobs)} job(s).", messages.SUCCESS)

    def get_urls(self):
        cancel = self.admin_site.admin_view(self.cancel_view)
        return [
            path("<int:job_id>/cancel/", cancel, name="mirror_prewarmjob_cancel"),
            *super().get_urls(),
        ]

    def cancel_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        job = get_object_or_404(PrewarmJob, pk=job_id)
        if request.method != "POST" or not self.has_cancel_permission(request):
            return HttpResponse(status=405 if request.method != "POST" else 403)
        prewarm.cancel(job)
        self.message_user(request, f"{job} cancelled.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:mirror_prewarmjob_change", args=[job.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = PrewarmJob.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        running = job is not None and job.status not in JOB_ENDED
        extra = {
            "refresh_seconds": REFRESH_SECONDS if running else None,
            "can_cancel": running and self.has_cancel_permission(request),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = PrewarmStartForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                job = prewarm.create_job(
                    form.specs(),
                    source=PrewarmJob.Source.ADMIN,
                    requested_by=request.user.get_username(),
                    platforms=form.cleaned_data["platforms"],
                    refresh=form.cleaned_data["refresh"],
                )
            except prewarm.JobInvalid as e:
                for field, problems in e.errors.items():
                    for problem in problems:
                        form.add_error(field if field in form.fields else None, problem)
            else:
                self.log_addition(request, job, [{"added": {}}])
                self.message_user(request, f"{job} started.", messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:mirror_prewarmjob_change", args=[job.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Start a prewarm job",
            "form": form,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/mirror/prewarmjob/start.html", context)


# --- The always-warm list and API tokens.


class AlwaysWarmForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=[("image", "image"), ("module", "module")])

    class Meta:
        model = AlwaysWarm
        fields = ("kind", "reference", "platforms", "enabled")

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") and data.get("reference"):
            try:
                ecosystems.get(data["kind"]).resolve(data["reference"])
            except ecosystems.InvalidReference as e:
                self.add_error("reference", str(e))
        return data


@admin.register(AlwaysWarm)
class AlwaysWarmAdmin(admin.ModelAdmin):
    form = AlwaysWarmForm
    list_display = ("reference", "kind", "platforms", "enabled", "created")
    list_filter = ("kind", "enabled")
    list_editable = ("enabled",)
    search_fields = ("reference",)


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in tokens.SCOPES],
        initial=["read"],
        widget=forms.CheckboxSelectMultiple,
        help_text="read < prewarm < admin: each scope includes those before it.",
    )


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Tokens are made here or with `manage.py mirror_token`; only their SHA-256 is kept, so
    a new token is shown once, on the page that made it, and never stored anywhere else."""

    list_display = ("name", "prefix", "scopes", "created", "last_used", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix")
    exclude = ("digest",)
    actions = ["revoke"]

    def has_add_permission(self, request, obj=None):
        return request.user.has_perm("mirror.add_apitoken")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mirror.change_apitoken")

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.update(revoked=True)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = ApiTokenCreateForm(request.POST if request.method == "POST" else None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Create an API token",
            "form": form,
        }
        if request.method == "POST" and form.is_valid():
            try:
                with transaction.atomic():
                    row, token = tokens.create(
                        form.cleaned_data["name"], form.cleaned_data["scopes"]
                    )
            except IntegrityError:
                form.add_error("name", "A token of this name exists.")
            else:
                self.log_addition(request, row, [{"added": {}}])
                context.update(title=f"API token {row.name}", token=token, row=row)
                # The admin's pages are never cached (no-store): the token stays on this one.
                return TemplateResponse(request, "admin/mirror/apitoken/created.html", context)
        return TemplateResponse(request, "admin/mirror/apitoken/create.html", context)


@admin.register(PullToken)
class PullTokenAdmin(admin.ModelAdmin):
    """A user's tokens for `docker login`/`podman login` and GOPROXY credentials; made here or
    with `manage.py mirror_token pull-create`. Only their SHA-256 is kept: a new token is shown
    once, on the page that made it. Tokens are not edited: revoke one and make another."""

    list_display = ("user", "name", "prefix", "created", "expires", "last_used", "revoked")
    list_filter = ("revoked",)
    list_select_related = ("user",)
    search_fields = ("user__username", "name", "prefix")
    fields = ("user", "name", "expires")
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: PullToken | None = None) -> tuple:
        if obj is None:
            return ()
        return ("user", "name", "prefix", "created", "expires", "last_used", "revoked")

    def get_fields(self, request: HttpRequest, obj: PullToken | None = None) -> tuple:
        return self.fields if obj is None else self.get_readonly_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: PullToken | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mirror.change_pulltoken")

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[PullToken]) -> None:
        count = queryset.update(revoked=True)
        access.forget()  # this process at once; the others within access.IDENTITY_SECONDS
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: PullToken, form, change: bool) -> None:
        request.new_pull_token = tokens.new_pull_secret(obj)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: PullToken, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Pull token {obj.name} of {obj.user}",
            "row": obj,
            "token": request.new_pull_token,  # type: ignore[attr-defined]
        }
        # The admin's pages are never cached (no-store): the token stays on this one.
        return TemplateResponse(request, "admin/mirror/pulltoken/created.html", context)
