"""Load the upstream file named by MIRROR_CONFIG into the Upstream table.

Rows are matched by `name` and updated; rows not in the file are left alone (an operator may
have added them in the admin). Credentials are only ever referenced by environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Upstream
from .upstreams import forget

DOCKER_HUB = {
    "name": "dockerhub",
    "kind": "oci",
    "url": "https://registry-1.docker.io",
    "prefix": "docker.io",
    "default": True,
}
# file field -> model field
FIELDS = {
    "name": "name",
    "kind": "kind",
    "url": "url",
    "prefix": "prefix",
    "default": "is_default",
    "enabled": "enabled",
    "tag_ttl": "tag_ttl",
    "stale_max_age": "stale_max_age",
    "username_env": "username_env",
    "password_env": "password_env",
    "modules": "modules",
    "verify_sums": "verify_sums",
    "fall_through": "fall_through",
    "sumdb": "sumdb",
    "key": "key",
}


class ConfigError(ValueError):
    pass


def _row(entry: Any, position: int) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(f"upstream #{position + 1} is not a mapping")
    unknown = set(entry) - set(FIELDS)
    if unknown:
        raise ConfigError(f"upstream #{position + 1}: unknown fields {sorted(unknown)}")
    for required in ("name", "kind", "url"):
        if not entry.get(required):
            raise ConfigError(f"upstream #{position + 1}: {required!r} is required")
    url = urlparse(str(entry["url"]))
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ConfigError(f"upstream {entry['name']}: url must be http(s)://host[:port]")
    modules = entry.get("modules", [])
    if not (isinstance(modules, list) and all(isinstance(m, str) and m for m in modules)):
        raise ConfigError(f"upstream {entry['name']}: modules must be a list of patterns")
    if entry["kind"] == "gosumdb" and not (entry.get("sumdb") and entry.get("key")):
        raise ConfigError(f"upstream {entry['name']}: a gosumdb needs 'sumdb' and 'key'")
    values = {FIELDS[k]: v for k, v in entry.items()}
    values["position"] = position
    return values


def load(path: Path | None) -> list[Upstream]:
    """Apply the file (or the Docker Hub default when there is no file and no upstream)."""
    if path is None:
        if Upstream.objects.exists():
            return []
        entries: list[Any] = [DOCKER_HUB]
    else:
        document = yaml.safe_load(Path(path).read_text()) or {}
        entries = document.get("upstreams") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: expected a top-level 'upstreams:' list")
    rows = [_row(entry, i) for i, entry in enumerate(entries)]
    if len({r["name"] for r in rows}) != len(rows):
        raise ConfigError("upstream names must be unique")
    saved = []
    with transaction.atomic():
        for values in rows:
            upstream = Upstream.objects.filter(name=values["name"]).first() or Upstream()
            for field, value in values.items():
                setattr(upstream, field, value)
            try:
                upstream.full_clean()
            except ValidationError as e:
                raise ConfigError(f"upstream {values['name']}: {e.message_dict}") from None
            upstream.save()
            saved.append(upstream)
    forget()
    return saved
