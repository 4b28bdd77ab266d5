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
    "mirror",
    "registries",
    "goproxy",
]

MIDDLEWARE = [
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
    DATABASES = {
        "default": dj_database_url.parse(
            os.environ["DATABASE_URL"],
            conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", 600)),
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "entrepot.sqlite3",
            # WAL lets readers proceed while a fill commits; IMMEDIATE avoids lock upgrades
            # that fail under concurrent writers.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
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

REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
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
# Storage below this many free bytes is "not ready" and refuses new fills (local folder).
MIRROR_MIN_FREE_BYTES = int(os.environ.get("MIRROR_MIN_FREE_BYTES", 1 << 30))

# --- Go (goproxy/).
# "off" lets Go upstreams run with no checksum database configured (explicitly unverified).
MIRROR_GO_VERIFY = os.environ.get("MIRROR_GO_VERIFY", "on").strip().lower()

# --- Server (config/gunicorn.py, README "Running it").
# A client must send its whole request head within this many seconds.
MIRROR_REQUEST_HEAD_TIMEOUT = _env_float("MIRROR_REQUEST_HEAD_TIMEOUT", 10)
