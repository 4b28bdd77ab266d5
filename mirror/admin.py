"""Admin: upstreams (editable; credentials write-only) and stored objects (read-only)."""

from django import forms
from django.contrib import admin

from .models import FillLease, StoredObject, Upstream


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
    list_display = ("name", "kind", "url", "prefix", "is_default", "enabled", "position")
    list_filter = ("kind", "enabled", "is_default")
    search_fields = ("name", "url", "prefix")
    readonly_fields = ("created", "updated")


@admin.register(StoredObject)
class StoredObjectAdmin(ReadOnlyAdmin):
    list_display = ("key", "size", "upstream", "created", "last_access", "access_count")
    list_filter = ("upstream",)
    search_fields = ("key",)
    ordering = ("-last_access",)


@admin.register(FillLease)
class FillLeaseAdmin(ReadOnlyAdmin):
    list_display = ("key", "owner", "expires_at", "size")
