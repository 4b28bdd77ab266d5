"""The core's tables: upstreams, the index of stored objects, and fill leases.

Protocol apps keep their own metadata (tags, manifests, module versions) and refer to stored
content by its storage key.
"""

from django.conf import settings
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
    private = models.BooleanField(
        default=False,
        help_text="Pulled only by the allowed users and groups (and superusers); anyone else "
        "gets the answer a name that does not exist gets.",
    )
    allowed_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="+", help_text="Private: who may pull."
    )
    allowed_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="+", help_text="Private: whose members may pull."
    )
    max_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Cache budget for this upstream's content, in bytes (empty: only the total "
        "budget, MIRROR_CACHE_MAX_BYTES, applies).",
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
    verified_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When re-verification last hashed it."
    )

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


class PrewarmJob(models.Model):
    """A request to warm images and modules: one item per reference, each run as a task."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        PARTIAL = "partial"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Source(models.TextChoices):
        API = "api"
        ADMIN = "admin"
        CLI = "cli"
        SCHEDULE = "schedule"

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    requested_by = models.CharField(
        max_length=150, blank=True, help_text="API token name or admin user (never a secret)."
    )
    platforms = models.JSONField(
        default=list, blank=True, help_text='Image platforms: [] for all, or ["linux/amd64"].'
    )
    refresh = models.BooleanField(
        default=False, help_text="Revalidate tags, lists and @latest even within their TTL."
    )
    cancel_requested = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "prewarm job"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"prewarm #{self.pk} ({self.status})"


class PrewarmItem(models.Model):
    """One reference of a job (`kind` names the ecosystem that warms it, mirror/ecosystems.py)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    job = models.ForeignKey(PrewarmJob, on_delete=models.CASCADE, related_name="items")
    kind = models.CharField(max_length=16)
    reference = models.CharField(max_length=1024)
    upstream = models.ForeignKey(Upstream, null=True, blank=True, on_delete=models.SET_NULL)
    platforms = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="Deferred (backoff or upstream budget) until then."
    )
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "prewarm item"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference} ({self.status})"


class AlwaysWarm(models.Model):
    """A reference the scheduled refresh keeps warm whatever its popularity; eviction never
    removes it. Seeded from `always_warm:` in MIRROR_CONFIG, editable in the admin."""

    kind = models.CharField(max_length=16, help_text="image or module")
    reference = models.CharField(max_length=1024)
    platforms = models.JSONField(default=list, blank=True, help_text="[] for all platforms")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "always-warm reference"
        constraints = [
            models.UniqueConstraint(fields=["kind", "reference"], name="unique_always_warm")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference}"


class ApiToken(models.Model):
    """A REST API token: only its SHA-256 is stored; the token is shown once, at creation."""

    class Scope(models.TextChoices):
        READ = "read"
        PREWARM = "prewarm"
        ADMIN = "admin"

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=16, help_text="The token's first characters.")
    digest = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class PullToken(models.Model):
    """A user's token for pulling (`docker login`/`podman login` password, or the password in
    `GOPROXY=https://USER:TOKEN@host`): only its SHA-256 is stored; shown once, at creation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pull_tokens"
    )
    name = models.CharField(max_length=100, help_text="What it is for, e.g. the CI system.")
    prefix = models.CharField(max_length=16, help_text="The token's first characters.")
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True, help_text="Empty: does not expire.")
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        verbose_name = "pull token"
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="unique_pull_token_name")
        ]

    def __str__(self) -> str:
        return f"{self.user} / {self.name} ({self.prefix}…)"


class Eviction(models.Model):
    """One unit of content taken out of the cache to keep it within its budget (or purged by
    an operator): an image tag or manifest with the blobs nothing kept refers to, or a module
    version's files."""

    class Reason(models.TextChoices):
        UPSTREAM_BUDGET = "upstream_budget", "upstream over its budget"
        TOTAL_BUDGET = "total_budget", "cache over its total budget"
        PURGE = "purge", "purged by an operator"

    when = models.DateTimeField(auto_now_add=True, db_index=True)
    upstream = models.ForeignKey(Upstream, null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=16, help_text="image or module (ecosystem kinds)")
    reference = models.CharField(max_length=1024)
    object_count = models.PositiveIntegerField(default=0, help_text="Stored objects deleted.")
    bytes = models.BigIntegerField(default=0, help_text="Bytes freed.")
    last_access = models.DateTimeField(
        null=True, blank=True, help_text="When it was last pulled before it went."
    )
    reason = models.CharField(max_length=32, choices=Reason.choices)

    class Meta:
        ordering = ["-when"]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference} ({self.reason})"


class UpstreamBudget(models.Model):
    """What an upstream said of its rate limit (Docker Hub's `ratelimit-*` headers, or a 429
    with Retry-After), shared by every process (mirror/budgets.py)."""

    upstream = models.OneToOneField(Upstream, on_delete=models.CASCADE, related_name="budget")
    limit = models.PositiveIntegerField(null=True, blank=True)
    remaining = models.PositiveIntegerField(null=True, blank=True)
    window_seconds = models.PositiveIntegerField(null=True, blank=True)
    blocked_until = models.DateTimeField(
        null=True, blank=True, help_text="A 429's Retry-After: no request before then."
    )
    updated = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.upstream_id}: {self.remaining}/{self.limit}"


class QuarantinedObject(models.Model):
    """Cached content that failed re-verification: taken out of the cache (never served
    again) and kept here for the operator (mirror/reverify.py)."""

    key = models.CharField(max_length=512)
    upstream = models.ForeignKey(Upstream, null=True, blank=True, on_delete=models.SET_NULL)
    size = models.BigIntegerField(null=True, blank=True)
    reason = models.TextField()
    quarantine_key = models.CharField(
        max_length=600, blank=True, help_text="Where the bad bytes were moved in storage."
    )
    detected = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "quarantined object"
        ordering = ["-detected"]

    def __str__(self) -> str:
        return self.key


# Module-level names of the status choices, for the OpenAPI enum names (SPECTACULAR_SETTINGS).
JobStatus = PrewarmJob.Status
ItemStatus = PrewarmItem.Status
