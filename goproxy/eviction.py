"""Eviction of cached Go modules: the "module" ecosystem's units (mirror/eviction.py).

A unit is one module version: its index row (ModuleVersion), its `.info` and `.mod`
documents, and its stored files (the `.zip`, and `.info`/`.mod` files kept by earlier
releases) in every scope it may be cached under (keys.py). Nothing else refers to a version's
files, so all of them go. It was last pulled when the go command last downloaded its zip (or,
never downloaded, when it was cached); it counts against the upstream its zip was stored for.
Lists, `@latest` and checksum-database answers stay: they are small, and say nothing of
what is stored.

An always-warm `module@version` is never a unit; an always-warm `module@latest` (or `module`)
keeps the module's highest cached version (a release, if any is cached).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.db.models.functions import Coalesce

from mirror.ecosystems import InvalidReference, Unit
from mirror.models import StoredObject

from . import chain, keys
from .cache import EXTENSIONS, _purge_small_files
from .models import ModuleVersion
from .paths import semver_key

KIND = "module"
BATCH = 200  # versions per look-up of their stored files


@dataclass(frozen=True)
class Handle:
    module: str
    version: str
    scopes: tuple[str, ...]


def _kept(keep: Sequence[str]) -> set[tuple[str, str]]:
    """The (module, version) pairs the always-warm references name."""
    from .prewarm import parse  # prewarm registers this module: imported at its load

    kept = set()
    for reference in keep:
        try:
            module, version = parse(reference)
        except InvalidReference:
            continue
        if version == "latest":
            cached = ModuleVersion.objects.filter(module=module).values_list("version", flat=True)
            releases = [v for v in cached if "-" not in v.split("+")[0]]
            version = max(releases or cached, key=semver_key, default="")
        if version:
            kept.add((module, version))
    return kept


def eviction_units(upstream_id: int | None, keep: Sequence[str]) -> Iterator[Unit]:
    """Module versions whose files are stored for the upstream (None: for any), least
    recently downloaded first."""
    kept = _kept(keep)
    rows = (
        ModuleVersion.objects.annotate(recency=Coalesce("last_download", "created"))
        .order_by("recency", "pk")
        .values_list("module", "version", "recency")
    )
    batch: list[tuple[str, str, dt.datetime]] = []
    for row in rows.iterator(chunk_size=BATCH):
        if (row[0], row[1]) not in kept:
            batch.append(row)
        if len(batch) >= BATCH:
            yield from _units(batch, upstream_id)
            batch = []
    yield from _units(batch, upstream_id)


def _units(batch: list[tuple[str, str, dt.datetime]], upstream_id: int | None) -> Iterator[Unit]:
    files = {}
    for module, version, _ in batch:
        scopes = tuple(sorted({"", chain.route(module).scope}))
        files[(module, version)] = (
            scopes,
            {keys.file_key(s, module, version, ext) for s in scopes for ext in EXTENSIONS},
        )
    wanted = [key for _, version_keys in files.values() for key in version_keys]
    stored = dict(StoredObject.objects.filter(key__in=wanted).values_list("key", "upstream_id"))
    for module, version, recency in batch:
        scopes, version_keys = files[(module, version)]
        found = sorted(key for key in version_keys if key in stored)
        if not found:
            continue
        zips = [key for key in found if key.endswith(".zip")]
        owner = stored[(zips or found)[0]]
        if upstream_id is not None and owner != upstream_id:
            continue
        yield Unit(
            KIND,
            f"{module}@{version}",
            owner,
            recency,
            frozenset(found),
            Handle(module, version, scopes),
        )


def evict(unit: Unit) -> None:
    """Forget the version's index row and its `.info` and `.mod` documents."""
    handle = unit.handle
    assert isinstance(handle, Handle)
    ModuleVersion.objects.filter(module=handle.module, version=handle.version).delete()
    _purge_small_files(handle.module, handle.scopes, [handle.version], every_version=False)


def referenced(unit: Unit) -> set[str]:
    """A version's files are its own: kept only if it was downloaded again meanwhile."""
    handle = unit.handle
    assert isinstance(handle, Handle)
    again = ModuleVersion.objects.filter(module=handle.module, version=handle.version).exists()
    return set(unit.keys) if again else set()
