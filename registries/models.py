"""The OCI cache index: repositories, tags (with TTL) and manifests (immutable, by digest)."""

from django.db import models

from mirror.models import Upstream


class Repository(models.Model):
    upstream = models.ForeignKey(Upstream, on_delete=models.CASCADE)
    name = models.CharField(max_length=255, help_text="The repository name at the upstream.")
    created = models.DateTimeField(auto_now_add=True)
    pull_count = models.BigIntegerField(default=0)
    last_pull = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "repositories"
        constraints = [
            models.UniqueConstraint(fields=["upstream", "name"], name="unique_repository")
        ]

    def __str__(self) -> str:
        return f"{self.upstream.name}:{self.name}"


class Manifest(models.Model):
    """A verified manifest; small enough to keep in the database and answer without storage."""

    digest = models.CharField(max_length=200, unique=True)
    media_type = models.CharField(max_length=255)
    size = models.PositiveIntegerField()
    body = models.BinaryField()
    created = models.DateTimeField(auto_now_add=True)
    pull_count = models.BigIntegerField(default=0)
    last_pull = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.digest


class Tag(models.Model):
    """What a tag pointed to when last checked; trusted for the upstream's `tag_ttl`."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    digest = models.CharField(max_length=200)
    media_type = models.CharField(max_length=255)
    size = models.PositiveIntegerField()
    fetched_at = models.DateTimeField(help_text="When the upstream last confirmed this digest.")
    pull_count = models.BigIntegerField(default=0)
    last_pull = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "name"], name="unique_tag")]

    def __str__(self) -> str:
        return f"{self.repository.name}:{self.name}"
