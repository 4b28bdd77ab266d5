"""The core's tables: upstreams, the index of stored objects, and fill leases.

Protocol apps keep their own metadata (tags, manifests, module versions) and refer to stored
content by its storage key.
"""

from django.db import models


class Upstream(models.Model):
    """A configured upstream. Only hosts named here are ever contacted."""

    class Kind(models.TextChoices):
        OCI = "oci", "OCI registry"
        GO = "go", "Go module proxy"
        GOSUMDB = "gosumdb", "Go checksum database"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    url = models.URLField(max_length=500, help_text="Base URL, e.g. https://registry-1.docker.io")
    prefix = models.CharField(
        max_length=255,
        blank=True,
        help_text="OCI: names starting with PREFIX/ (or ?ns=PREFIX) are routed here.",
    )
    is_default = models.BooleanField(
        default=False, help_text="OCI: serves names that match no prefix."
    )
    enabled = models.BooleanField(default=True)
    tag_ttl = models.PositiveIntegerField(
        default=300, help_text="Seconds a tag (or list) is trusted before it is revalidated."
    )
    stale_max_age = models.PositiveIntegerField(
        default=7 * 24 * 3600,
        help_text="Seconds past which a tag is no longer served stale when the upstream fails.",
    )
    username_env = models.CharField(
        max_length=128, blank=True, help_text="Environment variable holding the user name."
    )
    password_env = models.CharField(
        max_length=128, blank=True, help_text="Environment variable holding the password/token."
    )
    username = models.CharField(max_length=255, blank=True)
    password = models.CharField(max_length=1024, blank=True)
    position = models.PositiveIntegerField(default=0, help_text="Order among Go upstreams.")
    modules = models.JSONField(
        default=list,
        blank=True,
        help_text="Go: GOPRIVATE-style globs; matching modules come only from this upstream "
        "and are never sent to any other.",
    )
    verify_sums = models.BooleanField(
        default=True, help_text="Go: check modules against the checksum database."
    )
    fall_through = models.BooleanField(
        default=False, help_text="Go: try the next upstream on any error, not only 404/410."
    )
    sumdb = models.CharField(
        max_length=255, blank=True, help_text="gosumdb: the database name, e.g. sum.golang.org."
    )
    key = models.CharField(
        max_length=512, blank=True, help_text="gosumdb: the verifier key (name+hash+key)."
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["prefix"],
                condition=~models.Q(prefix="") & models.Q(kind="oci"),
                name="unique_oci_prefix",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind} {self.url})"


class StoredObject(models.Model):
    """A verified object committed to storage under its content-addressed key."""

    key = models.CharField(max_length=512, unique=True)
    size = models.BigIntegerField()
    upstream = models.ForeignKey(Upstream, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    last_access = models.DateTimeField(null=True, blank=True, db_index=True)
    access_count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "stored object"

    def __str__(self) -> str:
        return self.key


class FillLease(models.Model):
    """A claim to fill one key: whoever inserts the row fetches; others follow or wait.

    `expires_at` is renewed while the fill streams; a crashed filler's lease expires and the
    next request takes over. `spool_path` is a local file that followers on the same host can
    read while it grows; `size` is the expected size once the upstream has answered.
    """

    key = models.CharField(max_length=512, unique=True)
    owner = models.CharField(max_length=255)
    expires_at = models.DateTimeField()
    spool_path = models.CharField(max_length=1024, blank=True)
    size = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key} by {self.owner}"


class CachedDocument(models.Model):
    """A small upstream answer kept with its fetch time: lists, "latest" answers, checksum
    database lookups and tiles. `status` 404 records a cached "not found"."""

    namespace = models.CharField(max_length=32)
    key = models.CharField(max_length=1024)
    status = models.PositiveSmallIntegerField(default=200)
    body = models.BinaryField()
    fetched_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["namespace", "key"], name="unique_document")]

    def __str__(self) -> str:
        return f"{self.namespace}:{self.key}"
