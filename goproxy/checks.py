"""Start-up checks of the Go configuration (Django system checks, so `manage.py check`,
`migrate` and every management command run before the server refuse a bad one).

- Go upstreams that verify sums (`verify_sums`, the default) need a `gosumdb` upstream, unless
  MIRROR_GO_VERIFY=off says on purpose that modules are served checked against the zip rules
  only.
- Each checksum database's verifier key must parse.

The upstreams judged are those the server will run with: the table's rows (when the table
exists: not during the first `migrate`), with the MIRROR_CONFIG file's entries applied over
them by name as `load_mirror_config` will apply them, so that a corrected file is accepted
before it is loaded, and a wrong one is refused before the server starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.db import DatabaseError, connection

from mirror.config_file import FIELDS
from mirror.models import Upstream

from .sumdb import VerifierKey

_FIELDS = ("kind", "enabled", "verify_sums", "key")


def _file_entries() -> list[dict[str, Any]]:
    """MIRROR_CONFIG's upstream entries; none when it is unreadable (`load_mirror_config`
    reports that itself)."""
    if not settings.MIRROR_CONFIG:
        return []
    try:
        document = yaml.safe_load(Path(settings.MIRROR_CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return []
    entries = document.get("upstreams") if isinstance(document, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _upstreams() -> dict[str, dict[str, Any]]:
    """name -> {kind, enabled, verify_sums, key} of the upstreams the server will run with."""
    rows: dict[str, dict[str, Any]] = {}
    try:
        if Upstream._meta.db_table in connection.introspection.table_names():
            rows = {r.pop("name"): r for r in Upstream.objects.values("name", *_FIELDS)}
    except DatabaseError:
        pass  # no database yet: judge the file alone
    defaults = {f: Upstream._meta.get_field(f).get_default() for f in _FIELDS}
    for entry in _file_entries():
        row = rows.setdefault(str(entry.get("name")), dict(defaults))
        row.update({FIELDS[k]: v for k, v in entry.items() if FIELDS.get(k) in _FIELDS})
    return rows


def check_go_upstreams(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    verify = settings.MIRROR_GO_VERIFY
    if verify not in ("on", "off"):
        errors.append(
            Error(f"MIRROR_GO_VERIFY is {verify!r}: it must be 'on' or 'off'.", id="goproxy.E001")
        )
    upstreams = _upstreams()
    enabled = {name: u for name, u in upstreams.items() if u["enabled"]}
    verifying = sorted(n for n, u in enabled.items() if u["kind"] == "go" and u["verify_sums"])
    databases = {n: u for n, u in enabled.items() if u["kind"] == "gosumdb"}
    if verifying and not databases and verify != "off":
        errors.append(
            Error(
                f"Go upstreams {', '.join(verifying)} verify modules against a checksum "
                "database, and no gosumdb upstream is configured.",
                hint="Add a gosumdb upstream (e.g. {name: sumdb, kind: gosumdb, sumdb: "
                "sum.golang.org, url: https://sum.golang.org, key: <its verifier key>}), or "
                "set MIRROR_GO_VERIFY=off to serve modules checked against the zip rules only.",
                id="goproxy.E002",
            )
        )
    for name, db in sorted(databases.items()):
        try:
            VerifierKey.parse(str(db["key"] or ""))
        except ValueError as e:
            errors.append(
                Error(
                    f"gosumdb upstream {name}: its key is not a verifier key: {e}.",
                    hint="Use the database's NAME+HASH+KEY verifier key, e.g. "
                    "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8.",
                    id="goproxy.E003",
                )
            )
    return errors
