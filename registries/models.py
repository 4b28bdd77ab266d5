"""The OCI cache index: repositories, what the upstream confirmed each one holds (links), tags
(per negotiated media types, with TTL) and manifests (immutable, by digest)."""

from django.db import models

from mirror.models import Upstream


class Repository(models.Model):
    """A repository the upstream confirmed (a row is written only with its first link)."""

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


class Link(models.Model):
    """The upstream confirmed that this repository holds this digest: it served a manifest
    referencing it, or answered 200 for it under this name. Cached content is served under a
    name only through a link (distribution keeps the same per-repository links)."""

    class Kind(models.TextChoices):
        BLOB = "blob"
        MANIFEST = "manifest"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="links")
    digest = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "digest", "kind"], name="unique_link")
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}@{self.digest} ({self.kind})"


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
    """What a tag pointed to, for one set of accepted manifest types (`accept_key`, see
    registries/formats.py), when last checked; trusted for the upstream's `tag_ttl`.

    `media_type` and `size` answer HEAD requests (they may come from an upstream HEAD); a GET
    always answers with the stored manifest's own type and size.
    """

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    accept_key = models.CharField(
        max_length=255,
        default="",
        help_text="The manifest types the clients asked for ('*': any). Rows from before "
        "this field have '' and are never served; they are relearned on first use.",
    )
    digest = models.CharField(max_length=200)
    media_type = models.CharField(max_length=255)
    size = models.PositiveIntegerField()
    fetched_at = models.DateTimeField(help_text="When the upstream last confirmed this digest.")
    pull_count = models.BigIntegerField(default=0)
    last_pull = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "name", "accept_key"], name="unique_tag_per_accept"
            )
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}:{self.name}"


class TagHistory(models.Model):
    """Each digest a tag has pointed to upstream, with when it was first and last seen."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="history")
    name = models.CharField(max_length=128)
    digest = models.CharField(max_length=200)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        verbose_name_plural = "tag history"
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "name", "digest"], name="unique_tag_history"
            )
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}:{self.name} -> {self.digest}"


class TagPin(models.Model):
    """An operator's pin: clients get `digest` for this tag until it is unpinned."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="pins")
    name = models.CharField(max_length=128)
    digest = models.CharField(max_length=200)
    pinned_by = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "name"], name="unique_tag_pin")
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}:{self.name} pinned to {self.digest}"
