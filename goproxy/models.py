"""The Go cache index: module versions seen through the mirror, with download counts."""

from django.db import models


class ModuleVersion(models.Model):
    module = models.CharField(max_length=500)
    version = models.CharField(max_length=128)
    zip_size = models.BigIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    download_count = models.BigIntegerField(default=0)
    last_download = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(
        null=True, blank=True, help_text="When re-verification last checked it."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["module", "version"], name="unique_module_version")
        ]

    def __str__(self) -> str:
        return f"{self.module}@{self.version}"
