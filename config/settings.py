"""Entrepot settings: every value comes from the environment and has an embedded default.

The table of variables is in README.md ("Configuration").
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MIRROR_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in DATA_DIR."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DEBUG")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "mirror",
    "registries",
    "goproxy",
]

MIDDLEWARE = [
    # Outermost: request ids, request metrics, the access log (sees every answer as it leaves).
    "config.observability.observe",
    "django.middleware.security.SecurityMiddleware",
    # No body on HEAD error answers; the admin's frame and content policies.
    "config.middleware.site_rules",
    # Serves the admin's static files under gunicorn; no separate web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Innermost: a database or storage outage the view left unanswered is a 503.
    "config.middleware.OutageAnswers",
]
# The protocols' and the probes' stack (config/wsgi.py picks it by path): the above without
# what only the admin, the API and the front page use (static files, sessions, CSRF,
# authentication, messages). CommonMiddleware stays: it sets Content-Length.
PROTOCOL_MIDDLEWARE = [
    "config.observability.observe",
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.site_rules",
    "django.middleware.common.CommonMiddleware",
    "config.middleware.OutageAnswers",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
# Registry paths such as /v2/ must not be redirected by APPEND_SLASH.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("DATABASE_URL"):
    # Persistent connections: one per thread; see mirror/checks.py for the connection budget.
    # Health checks: a request's first query finds a connection that broke while idle (the
    # database restarted) and opens a new one, instead of failing on it once per thread.
    DATABASES = {
        "default": dj_database_url.parse(
            os.environ["DATABASE_URL"],
            conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", 600)),
            conn_health_checks=_env_bool("DATABASE_CONN_HEALTH_CHECKS", True),
        )
    }
else:
    _SQLITE_MMAP_BYTES = int(os.environ.get("DATABASE_SQLITE_MMAP_BYTES", 1 << 30))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "entrepot.sqlite3",
            # Persistent connections, one per thread: opening one (and running the PRAGMAs
            # below) per request took a third of a warm manifest request's time.
            "CONN_MAX_AGE": int(os.environ.get("DATABASE_CONN_MAX_AGE", 600)),
            # WAL lets readers proceed while a fill commits; IMMEDIATE avoids lock upgrades
            # that fail under concurrent writers. mmap: the connections (one per thread) read
            # the file's pages in place, from the one page cache of the kernel, instead of
            # each copying the pages it reads into a cache of its own: with 64 connections
            # taking turns over an index of 1M objects, a `_catalog` page's queries took
            # 0.21 ms instead of 0.42 ms (1k objects: 0.16 ms either way; 2026-12-02).
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                    f"PRAGMA mmap_size={_SQLITE_MMAP_BYTES};"
                ),
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Storage: S3 when a bucket is set (django-storages reads the AWS_* names), else a local folder.
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL") or None
AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME") or None
MIRROR_STORAGE_DIR = Path(os.environ.get("MIRROR_STORAGE_DIR", DATA_DIR / "storage"))
# Answer cached blob GETs with a 307 to a presigned S3 URL instead of streaming them.
MIRROR_S3_REDIRECT = _env_bool("MIRROR_S3_REDIRECT")

MIRROR_CONFIG = os.environ.get("MIRROR_CONFIG", "")
# Seconds a fill lease lives without renewal; a crashed filler's claim expires after this.
MIRROR_FILL_LEASE_SECONDS = _env_float("MIRROR_FILL_LEASE_SECONDS", 30)
# Seconds between sweeps of what crashed fills left (mirror/sweep.py; the default beat schedule).
MIRROR_SWEEP_EVERY = int(os.environ.get("MIRROR_SWEEP_EVERY", 900))
# Upstream timeouts: connecting and waiting for headers fail fast so that stale content or a
# clear error is served within seconds; a body may take long but must keep flowing.
MIRROR_UPSTREAM_CONNECT_TIMEOUT = _env_float("MIRROR_UPSTREAM_CONNECT_TIMEOUT", 3)
MIRROR_UPSTREAM_READ_TIMEOUT = _env_float("MIRROR_UPSTREAM_READ_TIMEOUT", 30)
# Upper bound on how long a manifest/tag answer may wait for the upstream in total.
MIRROR_UPSTREAM_METADATA_TIMEOUT = _env_float("MIRROR_UPSTREAM_METADATA_TIMEOUT", 8)
# Access counts are buffered in memory and written in batches this often.
MIRROR_STATS_FLUSH_SECONDS = _env_float("MIRROR_STATS_FLUSH_SECONDS", 5)
# Routing table and upstream rows are re-read from the database this often (admin edits).
MIRROR_UPSTREAM_CACHE_SECONDS = _env_float("MIRROR_UPSTREAM_CACHE_SECONDS", 5)

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

# The REST API (mirror/api/): Bearer API tokens first (so that a request without one gets
# 401 with a challenge), the admin's session for a logged-in operator browsing it.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "mirror.api.auth.TokenAuthentication",
        "mirror.api.auth.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["mirror.api.auth.HasScope"],
    "DEFAULT_SCHEMA_CLASS": "mirror.api.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "mirror.api.pagination.Pagination",
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": [],
    "EXCEPTION_HANDLER": "mirror.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Entrepot API",
    "DESCRIPTION": "Prewarm jobs, cache contents and freshness control of the Entrepot mirror.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "mirror.models.JobStatus",
        "ItemStatusEnum": "mirror.models.ItemStatus",
    },
}

# LOG_FORMAT=json (default): one JSON object per line, with the request id of the request
# being handled (config/observability.py); plain: one line of text.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.jsonlog.formatter"},
    },
    "filters": {"request_id": {"()": "config.observability.RequestIdFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if LOG_FORMAT == "plain" else "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # httpx logs every upstream request at INFO; upstream failures are logged by the core.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
# Key prefix inside the bucket, so that one bucket can hold several mirrors or other data.
MIRROR_S3_PREFIX = os.environ.get("MIRROR_S3_PREFIX", "entrepot")

# --- Caps and deadlines on everything that comes from an upstream (README "Caps and deadlines").
# Largest small answer read into memory (tags/list, Go list/@latest/.info, sumdb answers, error
# bodies), counted after decompression; over it: 502 and nothing cached.
MIRROR_MAX_METADATA_BYTES = int(os.environ.get("MIRROR_MAX_METADATA_BYTES", 8 << 20))
# Largest blob a fill accepts (0: no limit beyond the upstream's Content-Length).
MIRROR_MAX_BLOB_BYTES = int(os.environ.get("MIRROR_MAX_BLOB_BYTES", 64 << 30))

# --- Fill path (mirror/fill.py).
# A fill no client reads any more is stopped after this many seconds.
MIRROR_FILL_ABANDON_SECONDS = _env_float("MIRROR_FILL_ABANDON_SECONDS", 300)
# At most this many fills run at once in one process; more wait up to
# MIRROR_FILL_QUEUE_SECONDS, then get 503.
MIRROR_MAX_FILLS = int(os.environ.get("MIRROR_MAX_FILLS", 32))
MIRROR_FILL_QUEUE_SECONDS = _env_float("MIRROR_FILL_QUEUE_SECONDS", 10)
# A body announced under this many bytes is fetched into memory, verified and committed by the
# request that missed it (no fill thread, spool or lease renewal).
MIRROR_SMALL_OBJECT_BYTES = int(os.environ.get("MIRROR_SMALL_OBJECT_BYTES", 256 << 10))
# Storage below this many free bytes is "not ready" and refuses new fills (local folder).
MIRROR_MIN_FREE_BYTES = int(os.environ.get("MIRROR_MIN_FREE_BYTES", 1 << 30))

# --- Go (goproxy/).
# "off" lets Go upstreams run with no checksum database configured (explicitly unverified).
MIRROR_GO_VERIFY = os.environ.get("MIRROR_GO_VERIFY", "on").strip().lower()

# --- Server (config/gunicorn.py, README "Running it").
# A client must send its whole request head within this many seconds.
MIRROR_REQUEST_HEAD_TIMEOUT = _env_float("MIRROR_REQUEST_HEAD_TIMEOUT", 10)

# --- Celery (config/celery.py): prewarm jobs, scheduled refresh, re-verification.
# Redis when REDIS_URL is set; otherwise kombu's filesystem transport under MIRROR_DATA_DIR, so
# that `make run` runs jobs in a real worker process with no external service.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # Late acks: a task whose worker dies is delivered again; the visibility timeout must be
    # longer than the longest task (a prewarm item is bounded by the fill's own limits).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 12 * 3600))
    }
    # Shared by every instance (mirror/shared.py): upstream tokens, rate-limit counters.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    _broker_dir = DATA_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange tables (kombu's default is ./control, in whatever folder the worker runs).
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # job state lives in the database (mirror.PrewarmJob)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE

# --- Prewarm (mirror/prewarm.py).
# At most this many prewarm items fetch from one upstream at once, across all workers.
MIRROR_PREWARM_PER_UPSTREAM = int(os.environ.get("MIRROR_PREWARM_PER_UPSTREAM", 4))
# An item that fails with 5xx/429/timeouts is retried this many times, with exponential
# backoff from MIRROR_PREWARM_BACKOFF seconds (or the upstream's Retry-After), capped.
MIRROR_PREWARM_RETRIES = int(os.environ.get("MIRROR_PREWARM_RETRIES", 5))
MIRROR_PREWARM_BACKOFF = _env_float("MIRROR_PREWARM_BACKOFF", 5)
MIRROR_PREWARM_MAX_BACKOFF = _env_float("MIRROR_PREWARM_MAX_BACKOFF", 600)
# Items queued this long past their time, or running with a dead runner, are queued again.
MIRROR_PREWARM_STALLED_SECONDS = int(os.environ.get("MIRROR_PREWARM_STALLED_SECONDS", 300))
# The popular refresh: the top MIRROR_POPULAR_TOP tags and modules pulled in the last
# MIRROR_POPULAR_DAYS days, plus the always-warm list (admin, or `always_warm:` in
# MIRROR_CONFIG).
MIRROR_POPULAR_DAYS = int(os.environ.get("MIRROR_POPULAR_DAYS", 7))
MIRROR_POPULAR_TOP = int(os.environ.get("MIRROR_POPULAR_TOP", 50))
# Upstream budgets (mirror/budgets.py): under this many requests left in the upstream's
# rate-limit window, cached tags are served without revalidation and prewarm items wait.
MIRROR_BUDGET_RESERVE = int(os.environ.get("MIRROR_BUDGET_RESERVE", 10))
# Re-verification (mirror/reverify.py): bytes re-hashed per run, per ecosystem.
MIRROR_REVERIFY_BYTES = int(os.environ.get("MIRROR_REVERIFY_BYTES", 1 << 30))
# Seconds between popular refreshes: the default beat schedule (mirror/schedules.py; then admin).
MIRROR_REFRESH_EVERY = int(os.environ.get("MIRROR_REFRESH_EVERY", 3600))
# Seconds between re-verification runs: the default beat schedule (mirror/schedules.py; admin).
MIRROR_REVERIFY_EVERY = int(os.environ.get("MIRROR_REVERIFY_EVERY", 6 * 3600))

# --- Metrics, health and logs (issue 10; config/observability.py, mirror/metrics.py).
# When set, /metrics answers only requests with `Authorization: Bearer <this>`.
MIRROR_METRICS_TOKEN = os.environ.get("MIRROR_METRICS_TOKEN", "")
# The cache-content, prewarm-job and eviction figures of /metrics are read from the database
# at most this often per process (counting the cache scans its index).
MIRROR_METRICS_DATABASE_SECONDS = _env_float("MIRROR_METRICS_DATABASE_SECONDS", 30)
# One log line per request (logger entrepot.access): method, path without its query, status,
# ecosystem, upstream, cache result, duration. Off by default (gunicorn's own access log too).
MIRROR_ACCESS_LOG = _env_bool("MIRROR_ACCESS_LOG")
# Workers of one gunicorn master count into files here (config/gunicorn.py sets it); any other
# process given it (a Celery worker started from the same environment) needs it to exist.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# Opening a PostgreSQL connection gives up after this many seconds (libpq waits forever by
# default): /readyz, /metrics and requests answer 503 instead of hanging on a lost network.
DATABASE_CONNECT_TIMEOUT = int(os.environ.get("DATABASE_CONNECT_TIMEOUT", 5))
if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", DATABASE_CONNECT_TIMEOUT
    )

# --- Outages of the database and storage (issue 10; mirror/errors.py ServiceUnavailable).
# Besides DATABASE_CONNECT_TIMEOUT (above): a PostgreSQL connection that stops answering
# (a partition, a host gone without a reset) is dropped after this many seconds of
# unacknowledged data or failed keepalives, and the request answers 503 instead of hanging.
DATABASE_TCP_USER_TIMEOUT = _env_float("DATABASE_TCP_USER_TIMEOUT", 10)
if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # libpq's options; any given in DATABASE_URL's query string win.
    for _option, _value in {
        "tcp_user_timeout": int(DATABASE_TCP_USER_TIMEOUT * 1000),
        "keepalives": 1,
        "keepalives_idle": max(1, int(DATABASE_TCP_USER_TIMEOUT / 2)),
        "keepalives_interval": max(1, int(DATABASE_TCP_USER_TIMEOUT / 6)),
        "keepalives_count": 3,
    }.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(_option, _value)
# S3 calls (mirror/storage/s3.py): connecting, and waiting for each answer or read, are
# bounded; a failed call is tried AWS_S3_MAX_ATTEMPTS times in all (botocore's "standard"
# retries, with backoff), then the request answers 503.
AWS_S3_CONNECT_TIMEOUT = _env_float("AWS_S3_CONNECT_TIMEOUT", 3)
AWS_S3_READ_TIMEOUT = _env_float("AWS_S3_READ_TIMEOUT", 10)
AWS_S3_MAX_ATTEMPTS = int(os.environ.get("AWS_S3_MAX_ATTEMPTS", 3))

# --- Access control (issue 10; mirror/access.py, mirror/ratelimit.py, registries/auth.py).
# Lifetime of the Bearer tokens the mirror's token endpoint (/token) issues to OCI clients.
MIRROR_PULL_TOKEN_SECONDS = int(os.environ.get("MIRROR_PULL_TOKEN_SECONDS", 300))
# Requests reach the mirror through this many reverse proxies of yours (an Ingress: 1). Then,
# and only then, X-Forwarded-Proto (the token endpoint's address in challenges) and
# X-Forwarded-For (the client address rate limits count by) are believed; 0 trusts neither.
MIRROR_TRUSTED_PROXIES = int(os.environ.get("MIRROR_TRUSTED_PROXIES", 0))
if MIRROR_TRUSTED_PROXIES > 0:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _rate_limit(value: str) -> tuple[int, int] | None:
    """`REQUESTS/SECONDS` -> (requests, seconds); empty -> None (no limit)."""
    if not value.strip():
        return None
    count, _, seconds = value.strip().partition("/")
    if not (count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"MIRROR_RATE_LIMIT={value!r}: expected REQUESTS/SECONDS")
    return int(count), int(seconds)


# Per-client limit on protocol requests (/v2/, /token, GOPROXY and sumdb paths), e.g. 600/60:
# 600 requests per 60 s window per user (anonymous clients: per address); empty: no limit.
MIRROR_RATE_LIMIT = _rate_limit(os.environ.get("MIRROR_RATE_LIMIT", ""))

# --- A bounded cache (issue 10; mirror/eviction.py).
from mirror.sizes import parse_size as _parse_size  # noqa: E402 - pure Python, no Django

# The whole cache's budget, in bytes or with a unit ("500GB", "2TiB"); empty or 0: unbounded.
# Each upstream may have its own budget too (Upstream.max_bytes, `max_bytes:` in MIRROR_CONFIG).
MIRROR_CACHE_MAX_BYTES = _parse_size(os.environ.get("MIRROR_CACHE_MAX_BYTES", "").strip() or "0")
# Seconds between eviction passes: the default beat schedule (mirror/schedules.py; then admin).
MIRROR_EVICT_EVERY = int(os.environ.get("MIRROR_EVICT_EVERY", 300))
# Content pulled (or cached) this recently is never evicted: it may be being served now.
MIRROR_EVICT_GRACE_SECONDS = _env_float("MIRROR_EVICT_GRACE_SECONDS", 300)
