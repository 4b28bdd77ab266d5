"""Load the file named by MIRROR_CONFIG: upstreams, and the always-warm list.

Upstream rows are matched by `name` and updated; rows not in the file are left alone (an
operator may have added them in the admin). Credentials are only ever referenced by
environment variable.

The optional `always_warm:` list names what the scheduled refresh keeps warm whatever its
popularity (mirror.AlwaysWarm rows, editable in the admin), one entry per image or module:

    always_warm:
      - image: alpine:3.19            # a tag or digest, named as clients pull it
        platforms: [linux/amd64]      # optional: these platforms of an index ("all", default)
      - image: ghcr.io/acme/tool:v1
      - module: golang.org/x/mod@latest   # MODULE@VERSION, or @latest
        enabled: false                # optional: keep the row, skip it

Rows are matched by (kind, reference) as written and get the fields the entry gives (a new
row all platforms, enabled); rows not in the file are left alone. A reference that no
upstream serves is kept, with a warning (the refresh skips it until one does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from . import ecosystems
from .models import AlwaysWarm, Upstream
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
    "private": "private",
    "max_bytes": "max_bytes",
}
# Access lists: names of Django groups and users, created when missing (a new user has no
# password: give it pull tokens). Set after the row is saved; a list given replaces the old one.
ACCESS_FIELDS = ("allowed_groups", "allowed_users")


# always_warm entry field -> item kind (mirror/ecosystems.py); the other fields it may have.
WARM_KINDS = {"image": "image", "module": "module"}
WARM_OPTIONS = {"image": {"platforms", "enabled"}, "module": {"enabled"}}
_PLATFORM = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_.]+)?$")


class ConfigError(ValueError):
    pass


@dataclass
class Loaded:
    """What a load saved, and references that no upstream serves now."""

    upstreams: list[Upstream] = field(default_factory=list)
    always_warm: list[AlwaysWarm] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _row(entry: Any, position: int) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(f"upstream #{position + 1} is not a mapping")
    unknown = set(entry) - set(FIELDS) - set(ACCESS_FIELDS)
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
    for name in ACCESS_FIELDS:
        names = entry.get(name, [])
        if not (isinstance(names, list) and all(isinstance(n, str) and n.strip() for n in names)):
            raise ConfigError(f"upstream {entry['name']}: {name} must be a list of names")
    values = {FIELDS.get(k, k): v for k, v in entry.items()}
    values["position"] = position
    return values


def _warm_row(entry: Any, position: int) -> dict[str, Any]:
    """An always_warm entry -> AlwaysWarm field values (only those the entry gives)."""
    where = f"always_warm #{position + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a mapping (image: REF or module: REF)")
    kinds = [k for k in WARM_KINDS if k in entry]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {sorted(WARM_KINDS)}")
    kind = kinds[0]
    unknown = set(entry) - {kind} - WARM_OPTIONS[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown fields for {kind} {sorted(unknown)}")
    reference = entry[kind]
    if not isinstance(reference, str) or not reference or len(reference) > 1024:
        raise ConfigError(f"{where}: {kind} must be a reference (text of 1 to 1024 characters)")
    if reference != reference.strip() or any(c.isspace() for c in reference):
        raise ConfigError(f"{where}: {kind} {reference!r} contains spaces")
    values: dict[str, Any] = {"kind": WARM_KINDS[kind], "reference": reference}
    if "enabled" in entry:
        if not isinstance(entry["enabled"], bool):
            raise ConfigError(f"{where}: enabled must be true or false")
        values["enabled"] = entry["enabled"]
    if "platforms" in entry:
        values["platforms"] = _platforms(entry["platforms"], where)
    return values


def _platforms(value: Any, where: str) -> list[str]:
    """`all` -> [], or a list of os/arch[/variant]."""
    if value == "all":
        return []
    if not (isinstance(value, list) and value):
        raise ConfigError(f"{where}: platforms must be 'all' or a list like [linux/amd64]")
    for platform in value:
        if not (isinstance(platform, str) and _PLATFORM.match(platform)):
            raise ConfigError(f"{where}: platform {platform!r} is not os/arch[/variant]")
    return sorted(set(value))


def _parse(path: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validated (upstream rows, always-warm rows) of the file; nothing is saved."""
    if path is None:
        if Upstream.objects.exists():
            return [], []
        entries: Any = [DOCKER_HUB]
        warm: Any = []
    else:
        try:
            document = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        entries = document.get("upstreams") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: expected a top-level 'upstreams:' list")
        warm = document.get("always_warm") or []
        if not isinstance(warm, list):
            raise ConfigError(f"{path}: 'always_warm:' must be a list")
    rows = [_row(entry, i) for i, entry in enumerate(entries)]
    if len({r["name"] for r in rows}) != len(rows):
        raise ConfigError("upstream names must be unique")
    warm_rows = [_warm_row(entry, i) for i, entry in enumerate(warm)]
    if len({(r["kind"], r["reference"]) for r in warm_rows}) != len(warm_rows):
        raise ConfigError("always_warm entries must be unique")
    return rows, warm_rows


def _set_access(upstream: Upstream, allowed: dict[str, list[str]]) -> None:
    """The upstream's allowed groups and users, by name (created when missing)."""
    if "allowed_groups" in allowed:
        groups = [Group.objects.get_or_create(name=n.strip())[0] for n in allowed["allowed_groups"]]
        upstream.allowed_groups.set(groups)
    if "allowed_users" in allowed:
        users = []
        for name in allowed["allowed_users"]:
            user = get_user_model().objects.filter(username=name.strip()).first()
            if user is None:
                user = get_user_model().objects.create_user(username=name.strip())  # no password
            users.append(user)
        upstream.allowed_users.set(users)


def load(path: Path | None) -> Loaded:
    """Apply the file (or the Docker Hub default when there is no file and no upstream)."""
    rows, warm_rows = _parse(path)
    loaded = Loaded()
    with transaction.atomic():
        for values in rows:
            allowed = {name: values.pop(name) for name in ACCESS_FIELDS if name in values}
            upstream = Upstream.objects.filter(name=values["name"]).first() or Upstream()
            for name, value in values.items():
                setattr(upstream, name, value)
            try:
                upstream.full_clean()
            except ValidationError as e:
                raise ConfigError(f"upstream {values['name']}: {e.message_dict}") from None
            upstream.save()
            _set_access(upstream, allowed)
            loaded.upstreams.append(upstream)
        for values in warm_rows:
            row, _ = AlwaysWarm.objects.update_or_create(
                kind=values.pop("kind"), reference=values.pop("reference"), defaults=values
            )
            loaded.always_warm.append(row)
    forget()
    for row in loaded.always_warm:
        try:
            ecosystems.get(row.kind).resolve(row.reference)
        except ecosystems.InvalidReference as e:
            loaded.warnings.append(f"always-warm {row.kind} {row.reference}: {e}")
    return loaded
